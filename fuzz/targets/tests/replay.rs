//! Every committed fuzz input, replayed through its target on the stable
//! toolchain: the seed corpora (`fuzz/corpus/<target>/`) and every input that
//! ever failed and was fixed (`fuzz/artifacts/<target>/`, kept after the
//! fix). A panic here is a regression. Failures not fixed yet wait in
//! `fuzz/open/` (see its README), not replayed until their fix lands.

use std::path::Path;

#[test]
fn every_committed_input_runs_through_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut replayed = 0;
    for (name, target) in cxr_fuzz_targets::TARGETS {
        let mut seeds = 0;
        for folder in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else { continue };
            for entry in entries {
                let path = entry.expect("corpus entry").path();
                if path.is_file() {
                    let data = std::fs::read(&path).expect("read input");
                    target(&data);
                    replayed += 1;
                    seeds += usize::from(folder == "corpus");
                }
            }
        }
        assert!(seeds > 0, "{name} has no seed corpus in fuzz/corpus/{name}");
    }
    assert!(replayed >= cxr_fuzz_targets::TARGETS.len());
}

/// Writes the seed corpora (run once, then commit `fuzz/corpus`):
/// `cargo test -p cxr-fuzz-targets -- --ignored write_seed_corpora`.
#[test]
#[ignore = "writes fuzz/corpus; run by hand"]
fn write_seed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus");
    let events = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../events");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus dir");
        std::fs::write(dir.join(name), bytes).expect("seed");
    };
    let small = |format: image::ImageFormat, wide: bool| {
        let mut out = std::io::Cursor::new(Vec::new());
        let pixels = image::ImageBuffer::from_fn(24, 16, |x, y| image::Luma([(x * 9 + y * 5) as u8]));
        let picture = if wide {
            image::DynamicImage::ImageLuma16(image::ImageBuffer::from_fn(24, 16, |x, y| image::Luma([(x * 900 + y) as u16])))
        } else {
            image::DynamicImage::ImageLuma8(pixels)
        };
        picture.write_to(&mut out, format).expect("encode");
        out.into_inner()
    };
    let images: Vec<(&str, Vec<u8>)> = vec![
        ("small.png", small(image::ImageFormat::Png, false)),
        ("small16.png", small(image::ImageFormat::Png, true)),
        ("small.jpg", small(image::ImageFormat::Jpeg, false)),
        ("text-chunk.png", cxr_platform::testing::png_with_text("Patient Doe^Jane")),
        ("identifiable.dcm", cxr_platform::testing::identifiable_dicom(false)),
        ("burned-in.dcm", cxr_platform::testing::identifiable_dicom(true)),
    ];
    for (name, bytes) in &images {
        write("decode_image", name, bytes);
        write("describe_image", name, bytes);
    }
    let event = |file: &str| std::fs::read(events.join(file)).expect("sample event");
    write("s3_event", "object-created.json", &event("s3-object-created.json"));
    write(
        "s3_event",
        "escaped-key.json",
        &String::from_utf8(event("s3-object-created.json")).expect("utf-8").replace("original.png", "a+b%20c%2F..%2Foriginal.png").into_bytes(),
    );
    for file in ["api-list-studies.json", "api-list-studies-no-authorizer.json", "api-predict.json"] {
        write("api_gateway_event", file, &event(file));
    }
    let bodies: [(&str, u8, &str); 6] = [
        ("create-study", 0, r#"{"content_type":"image/png","content_length":1024}"#),
        ("create-annotation", 1, r#"{"label":"Cardiomegaly","box":{"x_min":1,"y_min":2,"width":30,"height":40}}"#),
        ("create-annotation-image-level", 1, r#"{"label_set":"vinbigdata","label":"No finding"}"#),
        ("update-annotation", 2, r#"{"label":"ILD","box":null}"#),
        ("update-annotation-box", 2, r#"{"box":{"x_min":0,"y_min":0,"width":1e30,"height":-1}}"#),
        ("complete-upload", 3, r#"{"upload_id":"abc","parts":[{"part_number":1,"etag":"\"e1\""},{"part_number":2,"etag":"\"e2\""}]}"#),
    ];
    for (name, which, body) in bodies {
        let mut bytes = vec![which];
        bytes.extend_from_slice(body.as_bytes());
        write("request_bodies", &format!("{name}.json"), &bytes);
    }
    let manifest = r#"{"format":"cxr-backup/1","job_run_id":7,"resumed_from":null,"watermark_from":null,"watermark_to":"2026-12-01T00:00:00Z","chunk_studies":500,
"tables":{"studies":{"rows":2,"parts":[{"key":"backups/x/studies/part-00000.parquet","rows":2,"bytes":900,"sha256":"00","min_id":1,"max_id":2}]}}}"#;
    write("backup_manifest", "manifest.json", manifest.as_bytes());
    let fragment = r#"{"image":{"id":12,"file_name":"images/0000000012.png","width":512,"height":512,"license":1},"split":"train",
"annotations":[{"id":1,"image_id":12,"category_id":3,"bbox":[5.0,6.0,70.0,80.0],"area":5600.0,"iscrowd":0}],
"detections":[{"image_id":12,"category_id":3,"bbox":[1.0,2.0,3.0,4.0],"score":0.9}],"updated_at":"2026-12-01T00:00:00Z"}"#;
    write("coco_fragment", "fragment.json", fragment.as_bytes());
}
