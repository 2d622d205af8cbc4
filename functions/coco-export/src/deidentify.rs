//! De-identification of images before they leave the data lake (data mart
//! exports, training sets).
//!
//! * DICOM: the PS3.15 Annex E Basic Application Level Confidentiality
//!   Profile, applied with dicom-rs: identifying attributes are removed or
//!   emptied, UIDs are replaced consistently (`2.25.` + a keyed hash, so the
//!   same study keeps one new UID across exports and re-runs), every date and
//!   time is emptied, person names anywhere are emptied, private tags,
//!   curves and overlays are removed, sequences are processed recursively,
//!   and Patient Identity Removed / De-identification Method are recorded.
//!   Files that declare burned-in annotations are refused: removing text
//!   from pixels (the Clean Pixel Data option) is not implemented.
//! * PNG/JPEG: metadata chunks/segments that can carry text (PNG tEXt,
//!   zTXt, iTXt, eXIf, tIME; JPEG EXIF/XMP/IPTC/comments) are dropped
//!   without re-encoding the pixels.
//!
//! The one public crate that applies the profile (dicom-anonymization 0.3)
//! pulls a large validation stack into every build and hashes identifiers
//! without a key, so the rules are kept here, on top of dicom-object.

use std::io::Cursor;

use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_object::{DefaultDicomObject, InMemDicomObject};
use img_parts::Bytes;
use sha2::{Digest, Sha256};

use cxr_platform::domain::MediaType;

/// What [`DEIDENTIFICATION_METHOD`] records in each DICOM file.
pub const DEIDENTIFICATION_METHOD: &str = "DICOM PS3.15 E.1 Basic Profile (cxr-platform): dates and times removed";

#[derive(Debug, thiserror::Error)]
pub enum DeidentifyError {
    #[error("not a readable DICOM file: {0}")]
    InvalidDicom(String),
    #[error("the DICOM file declares burned-in annotations (0028,0301 = YES); its pixels may show identifiers")]
    BurnedInAnnotation,
    #[error("not a readable {media_type} image: {reason}")]
    InvalidImage { media_type: &'static str, reason: String },
    #[error("writing the de-identified DICOM file failed: {0}")]
    Write(String),
}

/// The key that makes replacement UIDs consistent within one deployment
/// but unguessable outside it.
#[derive(Clone)]
pub struct UidKey(Vec<u8>);

impl UidKey {
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(secret.as_ref().to_vec())
    }

    /// The replacement for `uid`: `2.25.<128-bit decimal>` (PS3.5 B.2), at
    /// most 44 characters.
    pub fn replace_uid(&self, uid: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(&self.0);
        hasher.update([0u8]);
        hasher.update(uid.trim_end_matches(['\0', ' ']).as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        format!("2.25.{}", u128::from_be_bytes(bytes))
    }
}

impl std::fmt::Debug for UidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UidKey(<redacted>)")
    }
}

/// De-identifies an image of the given type; returns the new bytes.
pub fn deidentify(media_type: MediaType, bytes: &[u8], key: &UidKey) -> Result<Vec<u8>, DeidentifyError> {
    match media_type {
        MediaType::Dicom => deidentify_dicom(bytes, key),
        MediaType::Png => strip_png(bytes),
        MediaType::Jpeg => strip_jpeg(bytes),
    }
}

/// Attributes removed outright (PS3.15 Table E.1-1 action X, and the X of
/// X/Z, X/D combinations where the attribute is not needed). Retired
/// attributes are listed too: old files still carry them.
#[allow(deprecated)]
const REMOVE: &[Tag] = &[
    tags::INSTITUTION_NAME,
    tags::INSTITUTION_ADDRESS,
    tags::INSTITUTIONAL_DEPARTMENT_NAME,
    tags::REFERRING_PHYSICIAN_ADDRESS,
    tags::REFERRING_PHYSICIAN_TELEPHONE_NUMBERS,
    tags::REFERRING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
    tags::STATION_NAME,
    tags::STUDY_DESCRIPTION,
    tags::SERIES_DESCRIPTION,
    tags::PHYSICIANS_OF_RECORD,
    tags::PHYSICIANS_OF_RECORD_IDENTIFICATION_SEQUENCE,
    tags::PERFORMING_PHYSICIAN_NAME,
    tags::PERFORMING_PHYSICIAN_IDENTIFICATION_SEQUENCE,
    tags::NAME_OF_PHYSICIANS_READING_STUDY,
    tags::PHYSICIANS_READING_STUDY_IDENTIFICATION_SEQUENCE,
    tags::OPERATORS_NAME,
    tags::OPERATOR_IDENTIFICATION_SEQUENCE,
    tags::ADMITTING_DIAGNOSES_DESCRIPTION,
    tags::ADMITTING_DIAGNOSES_CODE_SEQUENCE,
    tags::DERIVATION_DESCRIPTION,
    tags::REFERENCED_PATIENT_SEQUENCE,
    tags::REFERENCED_STUDY_SEQUENCE,
    tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_TIME,
    tags::OTHER_PATIENT_I_DS,
    tags::OTHER_PATIENT_I_DS_SEQUENCE,
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_BIRTH_NAME,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::PATIENT_ADDRESS,
    tags::PATIENT_MOTHER_BIRTH_NAME,
    tags::MILITARY_RANK,
    tags::BRANCH_OF_SERVICE,
    tags::MEDICAL_RECORD_LOCATOR,
    tags::PATIENT_TELEPHONE_NUMBERS,
    tags::ETHNIC_GROUP,
    tags::OCCUPATION,
    tags::ADDITIONAL_PATIENT_HISTORY,
    tags::PATIENT_COMMENTS,
    tags::PATIENT_RELIGIOUS_PREFERENCE,
    tags::RESPONSIBLE_PERSON,
    tags::RESPONSIBLE_ORGANIZATION,
    tags::CURRENT_PATIENT_LOCATION,
    tags::PATIENT_INSTITUTION_RESIDENCE,
    tags::DEVICE_SERIAL_NUMBER,
    tags::PROTOCOL_NAME,
    tags::REQUESTING_PHYSICIAN,
    tags::REQUESTING_SERVICE,
    tags::REQUEST_ATTRIBUTES_SEQUENCE,
    tags::REQUESTED_PROCEDURE_DESCRIPTION,
    tags::PERFORMED_PROCEDURE_STEP_ID,
    tags::PERFORMED_PROCEDURE_STEP_DESCRIPTION,
    tags::SCHEDULED_PROCEDURE_STEP_ID,
    tags::IMAGE_COMMENTS,
    tags::TEXT_COMMENTS,
    tags::FRAME_COMMENTS,
    tags::ACQUISITION_COMMENTS,
    tags::STUDY_COMMENTS,
    tags::VISIT_COMMENTS,
    tags::ADMISSION_ID,
    tags::ISSUER_OF_ADMISSION_ID,
    tags::SERVICE_EPISODE_ID,
    tags::PATIENT_STATE,
    tags::PREGNANCY_STATUS,
    tags::MEDICAL_ALERTS,
    tags::ALLERGIES,
    tags::SMOKING_STATUS,
    tags::LAST_MENSTRUAL_DATE,
    tags::SPECIAL_NEEDS,
    tags::INSURANCE_PLAN_IDENTIFICATION,
    tags::PERSON_ADDRESS,
    tags::PERSON_TELEPHONE_NUMBERS,
    tags::ORDER_ENTERED_BY,
    tags::ORDER_ENTERER_LOCATION,
    tags::ORDER_CALLBACK_PHONE_NUMBER,
    tags::PLACER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
    tags::FILLER_ORDER_NUMBER_IMAGING_SERVICE_REQUEST,
    tags::SOURCE_APPLICATION_ENTITY_TITLE,
    tags::DATA_SET_TRAILING_PADDING,
    tags::DIGITAL_SIGNATURES_SEQUENCE,
];

/// Attributes kept but emptied (action Z: type 2, must be present).
const EMPTY: &[Tag] = &[
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::CONTENT_CREATOR_NAME,
];

/// UIDs replaced consistently (action U).
#[allow(deprecated)]
const REPLACE_UID: &[Tag] = &[
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SOP_INSTANCE_UID,
    tags::REFERENCED_SOP_INSTANCE_UID,
    tags::FRAME_OF_REFERENCE_UID,
    tags::SYNCHRONIZATION_FRAME_OF_REFERENCE_UID,
    tags::IRRADIATION_EVENT_UID,
    tags::INSTANCE_CREATOR_UID,
    tags::STORAGE_MEDIA_FILE_SET_UID,
    tags::REFERENCED_FRAME_OF_REFERENCE_UID,
    tags::RELATED_FRAME_OF_REFERENCE_UID,
    tags::DIMENSION_ORGANIZATION_UID,
    tags::CONCATENATION_UID,
    tags::DEVICE_UID,
    tags::TRANSACTION_UID,
    tags::FAILED_SOP_INSTANCE_UID_LIST,
    tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
    tags::ACQUISITION_UID,
    tags::TARGET_UID,
];

fn deidentify_dicom(bytes: &[u8], key: &UidKey) -> Result<Vec<u8>, DeidentifyError> {
    let mut file: DefaultDicomObject =
        OpenFileOptions::new().read_preamble(ReadPreamble::Auto).from_reader(Cursor::new(bytes)).map_err(|e| DeidentifyError::InvalidDicom(e.to_string()))?;
    let burned_in = file.get(tags::BURNED_IN_ANNOTATION).and_then(|e| e.to_str().ok()).is_some_and(|v| v.trim().eq_ignore_ascii_case("YES"));
    if burned_in {
        return Err(DeidentifyError::BurnedInAnnotation);
    }

    clean(&mut file, key);
    file.put(DataElement::new(tags::PATIENT_IDENTITY_REMOVED, VR::CS, PrimitiveValue::from("YES")));
    file.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::from(DEIDENTIFICATION_METHOD)));
    file.put(DataElement::new(tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, VR::CS, PrimitiveValue::from("REMOVED")));

    let meta = file.meta_mut();
    meta.media_storage_sop_instance_uid = key.replace_uid(&meta.media_storage_sop_instance_uid);
    meta.source_application_entity_title = None;
    meta.sending_application_entity_title = None;
    meta.receiving_application_entity_title = None;
    meta.private_information_creator_uid = None;
    meta.private_information = None;
    meta.update_information_group_length();

    let mut out = Vec::with_capacity(bytes.len());
    file.write_all(&mut out).map_err(|e| DeidentifyError::Write(e.to_string()))?;
    Ok(out)
}

/// Applies the profile to one data set and, recursively, its sequences.
fn clean(object: &mut InMemDicomObject, key: &UidKey) {
    object.retain(|element| {
        let tag = element.tag();
        let group = tag.group();
        let private = group % 2 == 1;
        let curve_or_overlay = (0x5000..=0x50FF).contains(&group) || (0x6000..=0x60FF).contains(&group);
        !(private || curve_or_overlay || REMOVE.contains(&tag))
    });
    let present: Vec<(Tag, VR)> = object.iter().map(|e| (e.tag(), e.vr())).collect();
    for (tag, vr) in present {
        if REPLACE_UID.contains(&tag) {
            object.update_value(tag, |value| {
                if let Value::Primitive(primitive) = value {
                    let replaced: Vec<String> = primitive.to_multi_str().iter().map(|uid| key.replace_uid(uid)).collect();
                    *primitive = PrimitiveValue::Strs(replaced.into());
                }
            });
        } else if EMPTY.contains(&tag) || matches!(vr, VR::PN | VR::DA | VR::DT | VR::TM) {
            // Every date and time goes (this profile keeps no temporal
            // information); person names anywhere, e.g. inside sequences.
            object.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        } else if vr == VR::SQ {
            object.update_value(tag, |value| {
                if let Some(items) = value.items_mut() {
                    for item in items.iter_mut() {
                        clean(item, key);
                    }
                }
            });
        }
    }
}

/// PNG chunks kept: those needed to show the pixels correctly. Text,
/// EXIF, timestamps and unknown chunks go.
const PNG_KEEP: [&[u8; 4]; 13] = [b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"pHYs", b"bKGD", b"cICP"];

fn strip_png(bytes: &[u8]) -> Result<Vec<u8>, DeidentifyError> {
    let mut png = img_parts::png::Png::from_bytes(Bytes::copy_from_slice(bytes))
        .map_err(|e| DeidentifyError::InvalidImage { media_type: "PNG", reason: e.to_string() })?;
    png.chunks_mut().retain(|chunk| PNG_KEEP.iter().any(|kind| **kind == chunk.kind()));
    Ok(png.encoder().bytes().to_vec())
}

fn strip_jpeg(bytes: &[u8]) -> Result<Vec<u8>, DeidentifyError> {
    use img_parts::jpeg::markers;
    let mut jpeg = img_parts::jpeg::Jpeg::from_bytes(Bytes::copy_from_slice(bytes))
        .map_err(|e| DeidentifyError::InvalidImage { media_type: "JPEG", reason: e.to_string() })?;
    // Kept: JFIF (APP0), ICC profile (APP2), Adobe colour transform (APP14).
    // Dropped: EXIF/XMP (APP1), IPTC (APP13), every other APPn, comments.
    jpeg.segments_mut().retain(|segment| {
        let marker = segment.marker();
        let app = (markers::APP0..=markers::APP15).contains(&marker);
        let keep_app = [markers::APP0, markers::APP2, markers::APP14].contains(&marker);
        marker != markers::COM && (!app || keep_app)
    });
    Ok(jpeg.encoder().bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cxr_platform::testing::{TINY_PNG, identifiable_dicom, png_with_text};

    fn read(bytes: &[u8]) -> DefaultDicomObject {
        OpenFileOptions::new().read_preamble(ReadPreamble::Auto).from_reader(Cursor::new(bytes)).expect("readable")
    }

    fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
        object.get(tag).map(|e| e.to_str().map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default())
    }

    #[test]
    fn dicom_identifiers_are_removed_and_uids_replaced_consistently() {
        let key = UidKey::new("test-secret");
        let original = identifiable_dicom(false);
        let out = deidentify(MediaType::Dicom, &original, &key).expect("de-identified");
        let file = read(&out);
        for tag in [tags::PATIENT_NAME, tags::PATIENT_ID, tags::PATIENT_BIRTH_DATE, tags::ACCESSION_NUMBER, tags::STUDY_DATE] {
            assert_eq!(text(&file, tag).as_deref(), Some(""), "{tag} emptied");
        }
        for tag in [tags::INSTITUTION_NAME, tags::PATIENT_ADDRESS, Tag(0x0009, 0x0010), Tag(0x0009, 0x1001), Tag(0x6000, 0x3000)] {
            assert!(file.get(tag).is_none(), "{tag} removed");
        }
        assert_eq!(text(&file, tags::MODALITY).as_deref(), Some("DX"), "non-identifying attributes kept");
        assert_eq!(text(&file, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
        let study_uid = text(&file, tags::STUDY_INSTANCE_UID).expect("study UID");
        assert_eq!(study_uid, key.replace_uid("1.2.826.0.1.3680043.2.1125.2"));
        assert!(study_uid.starts_with("2.25.") && study_uid.len() <= 64);
        assert_eq!(file.meta().media_storage_sop_instance_uid.trim_end_matches('\0'), text(&file, tags::SOP_INSTANCE_UID).expect("sop"));
        assert!(file.meta().source_application_entity_title.is_none());
        let item = &file.get(tags::REFERENCED_IMAGE_SEQUENCE).expect("sequence").items().expect("items")[0];
        assert_eq!(text(item, tags::PERSON_NAME).as_deref(), Some(""), "names inside sequences emptied");
        assert_eq!(text(item, tags::REFERENCED_SOP_INSTANCE_UID), Some(key.replace_uid("1.2.3.4.5")));
        assert_eq!(file.get(tags::PIXEL_DATA).expect("pixels").to_multi_int::<u16>().expect("u16"), [1, 2, 3, 4]);
        // Same input, same key: same bytes (re-runs are identical); another key: other UIDs.
        assert_eq!(deidentify(MediaType::Dicom, &original, &key).expect("again"), out);
        let other = read(&deidentify(MediaType::Dicom, &original, &UidKey::new("other")).expect("other key"));
        assert_ne!(text(&other, tags::STUDY_INSTANCE_UID), Some(study_uid));
        let raw = String::from_utf8_lossy(&out);
        for secret in ["Doe^Jane", "MRN-0042", "St Example", "HOSPITAL_PACS", "Doe^Nested", "19700101", "private patient"] {
            assert!(!raw.contains(secret), "{secret} still in the file");
        }
    }

    #[test]
    fn burned_in_annotations_and_garbage_are_refused() {
        let key = UidKey::new("k");
        assert!(matches!(deidentify(MediaType::Dicom, &identifiable_dicom(true), &key), Err(DeidentifyError::BurnedInAnnotation)));
        assert!(matches!(deidentify(MediaType::Dicom, b"not dicom", &key), Err(DeidentifyError::InvalidDicom(_))));
        assert!(matches!(deidentify(MediaType::Png, b"\x89PNG\r\n\x1a\nbroken", &key), Err(DeidentifyError::InvalidImage { .. })));
    }

    #[test]
    fn png_text_chunks_are_dropped_and_pixels_kept() {
        let with_text = png_with_text("Patient Doe^Jane");
        assert_ne!(with_text, TINY_PNG);
        let out = deidentify(MediaType::Png, &with_text, &UidKey::new("k")).expect("stripped");
        assert_eq!(out, TINY_PNG, "only the text chunk removed");
    }

    #[test]
    fn jpeg_exif_and_comments_are_dropped() {
        use img_parts::jpeg::{Jpeg, JpegSegment, markers};
        // SOI, APP0 (JFIF), APP1 (EXIF), COM, EOI: enough structure for the container parser.
        let mut jpeg = Jpeg::from_bytes(Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xD9])).expect("minimal JPEG");
        jpeg.segments_mut().push(JpegSegment::new_with_contents(markers::APP0, Bytes::from_static(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0")));
        jpeg.segments_mut().push(JpegSegment::new_with_contents(markers::APP1, Bytes::from_static(b"Exif\0\0Doe^Jane")));
        jpeg.segments_mut().push(JpegSegment::new_with_contents(markers::COM, Bytes::from_static(b"patient MRN-0042")));
        let out = deidentify(MediaType::Jpeg, &jpeg.encoder().bytes(), &UidKey::new("k")).expect("stripped");
        let kept: Vec<u8> = Jpeg::from_bytes(out.into()).expect("jpeg").segments().iter().map(|s| s.marker()).collect();
        assert_eq!(kept, [markers::APP0]);
    }
}
