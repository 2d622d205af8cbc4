//! What an uploaded image is, read from its headers only (no pixel
//! decoding: the model server does that): format by magic bytes, size,
//! bit depth, SHA-256, and for DICOM the non-identifying attributes the
//! data lake keeps (the study's `dicom` column).

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use img_parts::Bytes;

use crate::domain::{ImageFacts, MediaType, Sha256Digest};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DescribeError {
    #[error("the file is not a PNG, JPEG or DICOM image")]
    UnknownFormat,
    #[error("the file is a {found} image, but the study was created for {declared}")]
    WrongType { declared: MediaType, found: MediaType },
    #[error("unreadable {media_type} header: {reason}")]
    Unreadable { media_type: MediaType, reason: String },
}

/// DICOM attributes kept in the data lake: technical, not identifying
/// (PS3.15 basic profile: none of these is removed or replaced).
const KEPT_DICOM: [(dicom_core::Tag, &str); 9] = [
    (tags::MODALITY, "Modality"),
    (tags::ROWS, "Rows"),
    (tags::COLUMNS, "Columns"),
    (tags::BITS_STORED, "BitsStored"),
    (tags::PHOTOMETRIC_INTERPRETATION, "PhotometricInterpretation"),
    (tags::VIEW_POSITION, "ViewPosition"),
    (tags::BODY_PART_EXAMINED, "BodyPartExamined"),
    (tags::PIXEL_SPACING, "PixelSpacing"),
    (tags::SOP_CLASS_UID, "SOPClassUID"),
];

/// Describes `bytes`, which the study declared to be `declared`.
pub fn describe(bytes: &[u8], declared: MediaType) -> Result<ImageFacts, DescribeError> {
    let found = MediaType::sniff(bytes).ok_or(DescribeError::UnknownFormat)?;
    if found != declared {
        return Err(DescribeError::WrongType { declared, found });
    }
    let unreadable = |reason: String| DescribeError::Unreadable { media_type: found, reason };
    let (width, height, bit_depth, modality, dicom) = match found {
        MediaType::Png => {
            let png = img_parts::png::Png::from_bytes(Bytes::copy_from_slice(bytes)).map_err(|e| unreadable(e.to_string()))?;
            let (w, h) = png.dimensions().ok_or_else(|| unreadable("no IHDR chunk".into()))?;
            // IHDR: width, height, then the bit depth byte.
            let depth = png.chunk_by_type(*b"IHDR").and_then(|c| c.contents().get(8).copied()).unwrap_or(8);
            (w, h, depth, None, None)
        }
        MediaType::Jpeg => {
            let jpeg = img_parts::jpeg::Jpeg::from_bytes(Bytes::copy_from_slice(bytes)).map_err(|e| unreadable(e.to_string()))?;
            let (w, h) = jpeg.dimensions().ok_or_else(|| unreadable("no frame header".into()))?;
            (u32::from(w), u32::from(h), 8, None, None)
        }
        MediaType::Dicom => {
            cxr_dicom_guard::check_lengths(bytes).map_err(|e| unreadable(e.to_string()))?;
            let object = OpenFileOptions::new()
                .read_preamble(ReadPreamble::Auto)
                .read_until(tags::PIXEL_DATA)
                .from_reader(Cursor::new(bytes))
                .map_err(|e| unreadable(e.to_string()))?;
            let number = |tag| object.get(tag).and_then(|e| e.to_int::<u32>().ok());
            let (Some(rows), Some(columns)) = (number(tags::ROWS), number(tags::COLUMNS)) else {
                return Err(unreadable("no Rows/Columns".into()));
            };
            let bits = number(tags::BITS_STORED).unwrap_or(16).min(32) as u8;
            let mut kept = serde_json::Map::new();
            for (tag, name) in KEPT_DICOM {
                if let Some(value) = object.get(tag).and_then(|e| e.to_str().ok()) {
                    kept.insert(name.to_owned(), serde_json::Value::String(value.trim_end_matches(['\0', ' ']).to_owned()));
                }
            }
            let modality = kept.get("Modality").and_then(|m| m.as_str()).filter(|m| !m.is_empty()).map(str::to_owned);
            (columns, rows, bits, modality, Some(serde_json::Value::Object(kept)))
        }
    };
    if width == 0 || height == 0 {
        return Err(unreadable("zero width or height".into()));
    }
    Ok(ImageFacts { byte_size: bytes.len() as u64, sha256: Sha256Digest::of(bytes), width, height, bit_depth, modality, dicom })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TINY_PNG, identifiable_dicom};

    #[test]
    fn png_and_dicom_are_described_without_identifiers() {
        let png = describe(TINY_PNG, MediaType::Png).expect("png");
        assert_eq!((png.width, png.height, png.bit_depth, png.byte_size), (1, 1, 8, TINY_PNG.len() as u64));
        let dicom = describe(&identifiable_dicom(false), MediaType::Dicom).expect("dicom");
        assert_eq!((dicom.width, dicom.height, dicom.modality.as_deref()), (2, 2, Some("DX")));
        let kept = dicom.dicom.expect("attributes").to_string();
        assert!(kept.contains("\"Modality\":\"DX\"") && !kept.contains("Doe") && !kept.contains("MRN"), "{kept}");
    }

    #[test]
    fn wrong_or_unknown_types_are_refused() {
        assert_eq!(describe(TINY_PNG, MediaType::Jpeg), Err(DescribeError::WrongType { declared: MediaType::Jpeg, found: MediaType::Png }));
        assert_eq!(describe(b"GIF89a", MediaType::Png), Err(DescribeError::UnknownFormat));
    }
}
