//! Everything that parses bytes from outside the platform, one function per
//! fuzz target. Each takes any bytes and must return: refusing the input is
//! fine, a panic, a hang or an allocation the size of a lie is a bug.
//!
//! `fuzz/` (cargo-fuzz, nightly) runs them under libFuzzer; the test in
//! `tests/replay.rs` (stable, in the README's test command) runs each over
//! its committed corpus and every input that ever failed.

use cxr_domain::{MediaType, ObjectKey, PixelBox};

/// A fuzz target: any bytes in, nothing out.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/fuzz_targets/<name>.rs` and
/// `fuzz/corpus/<name>/` spell them.
pub const TARGETS: &[(&str, Target)] = &[
    ("decode_image", decode_image),
    ("describe_image", describe_image),
    ("s3_event", s3_event),
    ("api_gateway_event", api_gateway_event),
    ("request_bodies", request_bodies),
    ("backup_manifest", backup_manifest),
    ("coco_fragment", coco_fragment),
];

/// The model server's decoding of an invocation body (PNG, JPEG, DICOM by
/// their first bytes), with its default limits.
pub fn decode_image(data: &[u8]) {
    let _ = cxr_inference::decode::decode(data, &cxr_inference::decode::Limits::default());
}

/// The `infer` handler's and `POST /v1/predict`'s description of an upload
/// (type, size, digest, DICOM header), declared as each type in turn.
pub fn describe_image(data: &[u8]) {
    for declared in MediaType::ALL {
        let _ = cxr_platform::imaging::describe(data, declared);
    }
}

/// An S3 ObjectCreated notification, as `infer` reads it: the event, then
/// each record's bucket and decoded key, then the key checked.
pub fn s3_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<aws_lambda_events::s3::S3Event>(data) else { return };
    for record in &event.records {
        if let Some((_, key)) = cxr_infer::s3_event::object_of(record) {
            let _ = ObjectKey::new(key);
        }
    }
}

/// An API Gateway HTTP API (payload v2) event, as the API's Lambda entry
/// (`cxr_api::lambda`) reads it: the runtime's parse, our check of the body,
/// then lambda_http's conversion into the request the Router sees.
pub fn api_gateway_event(data: &[u8]) {
    let Ok(event) = serde_json::from_slice::<lambda_http::request::LambdaRequest>(data) else { return };
    if cxr_api::lambda::event_converts(&event) {
        let _ = lambda_http::Request::from(event);
    }
}

/// The JSON bodies of every POST and PATCH, and the checks that follow the
/// parse: the first byte picks the body.
pub fn request_bodies(data: &[u8]) {
    use cxr_api::routes::{annotations, studies, uploads};
    let Some((&which, body)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            let _ = serde_json::from_slice::<studies::CreateStudy>(body);
        }
        1 => {
            if let Ok(request) = serde_json::from_slice::<annotations::CreateAnnotation>(body)
                && let Some(raw) = request.bbox
                && let Ok(bbox) = serde_json::from_value::<PixelBox>(raw)
            {
                let _ = bbox.within(4096, 4096);
            }
        }
        2 => {
            if let Ok(request) = serde_json::from_slice::<annotations::UpdateAnnotation>(body)
                && let Some(Some(raw)) = request.bbox
            {
                let _ = serde_json::from_value::<PixelBox>(raw);
            }
        }
        _ => {
            // The multipart completion.
            let _ = serde_json::from_slice::<uploads::CompleteUpload>(body);
        }
    }
}

/// A backup's manifest, as a restore reads it before loading anything.
pub fn backup_manifest(data: &[u8]) {
    let _ = cxr_backup::manifest::Manifest::from_json(data);
}

/// A COCO export's fragment, as the next export reads it back from the
/// mart, and a COCO file.
pub fn coco_fragment(data: &[u8]) {
    let _ = serde_json::from_slice::<cxr_coco_export::export::Fragment>(data);
    let _ = serde_json::from_slice::<cxr_coco_export::coco::CocoFile>(data);
}
