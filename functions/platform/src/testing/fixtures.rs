//! DICOM and image fixtures for de-identification and export tests.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use img_parts::Bytes;

/// A small (2x2) Part 10 file full of identifiers.
pub fn identifiable_dicom(burned_in: bool) -> Vec<u8> {
    identifiable_dicom_of(burned_in, 2, 2, vec![1, 2, 3, 4], false)
}

/// The same identifiers on a `rows` x `columns` 16-bit image (a gradient),
/// large enough for the model to read.
pub fn identifiable_dicom_image(rows: u16, columns: u16) -> Vec<u8> {
    let pixels = (0..u32::from(rows) * u32::from(columns)).map(|i| ((i * 37) % 4096) as u16).collect();
    identifiable_dicom_of(false, rows, columns, pixels, true)
}

fn identifiable_dicom_of(burned_in: bool, rows: u16, columns: u16, pixels: Vec<u16>, decodable: bool) -> Vec<u8> {
    let nested = InMemDicomObject::from_element_iter([
        DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")),
        DataElement::new(tags::PERSON_NAME, VR::PN, PrimitiveValue::from("Doe^Nested")),
    ]);
    let mut object = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1")),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.2.1125.1")),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.826.0.1.3680043.2.1125.2")),
        DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20240131")),
        DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC123")),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
        DataElement::new(tags::INSTITUTION_NAME, VR::LO, PrimitiveValue::from("St Example Hospital")),
        DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("MRN-0042")),
        DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from("19700101")),
        DataElement::new(tags::PATIENT_ADDRESS, VR::LO, PrimitiveValue::from("1 Example Road")),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(columns)),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
        DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("VENDOR")),
        DataElement::new(Tag(0x0009, 0x1001), VR::LO, PrimitiveValue::from("private patient id")),
        DataElement::new(Tag(0x6000, 0x3000), VR::OW, dicom_core::dicom_value!(U16, [0, 1])),
    ]);
    object.put(DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![nested])));
    if decodable {
        // What a reader needs to decode the pixels (12 bits in 16).
        object.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)));
        object.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")));
        object.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)));
        object.put(DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)));
        object.put(DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)));
        object.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0_u16)));
    }
    if burned_in {
        object.put(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from("YES")));
    }
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
        .media_storage_sop_instance_uid("1.2.826.0.1.3680043.2.1125.1")
        .transfer_syntax("1.2.840.10008.1.2.1")
        .source_application_entity_title("HOSPITAL_PACS");
    let file = object.with_meta(meta).expect("meta");
    let mut bytes = Vec::new();
    file.write_all(&mut bytes).expect("write");
    bytes
}

/// A 1x1 grey PNG.
pub const TINY_PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x00,
    0x00, 0x00, 0x00, 0x3A, 0x7E, 0x9B, 0x55, 0x00, 0x00, 0x00, 0x0A, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0xE2,
    0x21, 0xBC, 0x33, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

/// [`TINY_PNG`] with a tEXt chunk carrying `text`.
pub fn png_with_text(text: &str) -> Vec<u8> {
    let mut png = img_parts::png::Png::from_bytes(Bytes::from_static(TINY_PNG)).expect("png");
    let chunk = img_parts::png::PngChunk::new(*b"tEXt", Bytes::from(format!("Comment\0{text}").into_bytes()));
    png.chunks_mut().insert(1, chunk);
    png.encoder().bytes().to_vec()
}
