//! Generated inputs shared by the tests, the parity fixtures and the
//! benchmark: the formula images `parity/make_fixtures.py` also draws, and
//! small DICOM files.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use crate::preprocess::Pixels;

/// 600 wide, 520 high, 8-bit grey (shrunk by both pipelines).
pub fn grey_image() -> Pixels {
    let (w, h) = (600usize, 520usize);
    let samples = (0..h).flat_map(|y| (0..w).map(move |x| ((x * 7 + y * 13 + (x * y) % 31) % 256) as f32)).collect();
    Pixels { width: w, height: h, channels: 1, samples, max_value: 255.0 }
}

/// 200 wide, 300 high, 8-bit RGB (enlarged by both pipelines).
pub fn rgb_image() -> Pixels {
    let (w, h) = (200usize, 300usize);
    let samples = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [((x * 3 + y) % 256) as f32, ((x + y * 5) % 256) as f32, ((x * y) % 256) as f32]))
        .collect();
    Pixels { width: w, height: h, channels: 3, samples, max_value: 255.0 }
}

/// A native (explicit VR little endian) 16-bit MONOCHROME2 DICOM file of
/// `columns` x `rows` pixels, 12 bits stored, with a gradient.
pub fn dicom_file(columns: u16, rows: u16) -> Vec<u8> {
    let pixels: Vec<u16> = (0..u32::from(rows)).flat_map(|y| (0..u32::from(columns)).map(move |x| ((x * 13 + y * 7) % 4096) as u16)).collect();
    let object = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1")),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(columns)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
        .media_storage_sop_instance_uid("1.2.3.4")
        .transfer_syntax("1.2.840.10008.1.2.1");
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a well-formed object built here.
    if let Ok(file) = object.with_meta(meta) {
        let _ = file.write_all(&mut out);
    }
    out
}
