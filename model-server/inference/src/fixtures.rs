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
    let samples = (0..h).flat_map(|y| (0..w).flat_map(move |x| [((x * 3 + y) % 256) as f32, ((x + y * 5) % 256) as f32, ((x * y) % 256) as f32])).collect();
    Pixels { width: w, height: h, channels: 3, samples, max_value: 255.0 }
}

/// What a generated DICOM file holds; [`DicomSpec::default`] is a native
/// (explicit VR little endian) 2x2, 16-bit, 12-bits-stored MONOCHROME2 DX
/// image. Tests change what they exercise and call [`dicom`].
#[derive(Clone, Debug)]
pub struct DicomSpec {
    pub transfer_syntax: &'static str,
    pub photometric: &'static str,
    pub columns: u16,
    pub rows: u16,
    /// 8 or 16.
    pub bits_allocated: u16,
    pub bits_stored: u16,
    /// `(slope, intercept)`.
    pub rescale: Option<(f64, f64)>,
    /// `(center, width)`.
    pub window: Option<(f64, f64)>,
    /// Pixel data; `None` = a gradient of `columns x rows` native samples.
    pub pixel_data: Option<dicom_core::value::Value<InMemDicomObject, Vec<u8>>>,
}

impl Default for DicomSpec {
    fn default() -> Self {
        Self {
            transfer_syntax: "1.2.840.10008.1.2.1",
            photometric: "MONOCHROME2",
            columns: 2,
            rows: 2,
            bits_allocated: 16,
            bits_stored: 12,
            rescale: None,
            window: None,
            pixel_data: None,
        }
    }
}

/// A Part 10 DICOM file as `spec` describes.
pub fn dicom(spec: DicomSpec) -> Vec<u8> {
    let (columns, rows) = (u32::from(spec.columns), u32::from(spec.rows));
    let max = (1u32 << spec.bits_stored) - 1;
    let gradient = (0..rows).flat_map(|y| (0..columns).map(move |x| (x * 13 + y * 7) % (max + 1)));
    let (pixel_vr, pixel_data) = match (spec.pixel_data, spec.bits_allocated) {
        (Some(value), 8) => (VR::OB, value),
        (Some(value), _) => (VR::OW, value),
        (None, 8) => (VR::OB, PrimitiveValue::U8(gradient.map(|v| v as u8).collect()).into()),
        (None, _) => (VR::OW, PrimitiveValue::U16(gradient.map(|v| v as u16).collect()).into()),
    };
    let mut object = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1")),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(spec.photometric)),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(spec.rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(spec.columns)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(spec.bits_allocated)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(spec.bits_stored)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(spec.bits_stored - 1)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
    ]);
    if let Some((slope, intercept)) = spec.rescale {
        object.put(DataElement::new(tags::RESCALE_SLOPE, VR::DS, PrimitiveValue::from(slope.to_string())));
        object.put(DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, PrimitiveValue::from(intercept.to_string())));
    }
    if let Some((center, width)) = spec.window {
        object.put(DataElement::new(tags::WINDOW_CENTER, VR::DS, PrimitiveValue::from(center.to_string())));
        object.put(DataElement::new(tags::WINDOW_WIDTH, VR::DS, PrimitiveValue::from(width.to_string())));
    }
    object.put(DataElement::new(tags::PIXEL_DATA, pixel_vr, pixel_data));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
        .media_storage_sop_instance_uid("1.2.3.4")
        .transfer_syntax(spec.transfer_syntax);
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a well-formed object built here.
    if let Ok(file) = object.with_meta(meta) {
        let _ = file.write_all(&mut out);
    }
    out
}

/// A native 16-bit MONOCHROME2 DICOM file of `columns` x `rows` pixels,
/// 12 bits stored, with a gradient.
pub fn dicom_file(columns: u16, rows: u16) -> Vec<u8> {
    dicom(DicomSpec { columns, rows, ..DicomSpec::default() })
}
