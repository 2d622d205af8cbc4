//! Decoding PNG, JPEG and DICOM, and refusing what must not be decoded.

use std::io::Cursor;

use cxr_inference::decode::{DecodeError, Format, Limits, decode};
use cxr_inference::fixtures::{DicomSpec, dicom};
use dicom_core::{PrimitiveValue, dicom_value};
use dicom_object::InMemDicomObject;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb};

fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

#[test]
fn png_grey_8_and_16_bit_and_colour() {
    let grey = ImageBuffer::from_fn(4, 3, |x, y| Luma([(x * 10 + y) as u8]));
    let decoded = decode(&encode(DynamicImage::ImageLuma8(grey), ImageFormat::Png), &Limits::default()).expect("8-bit");
    assert_eq!((decoded.format, decoded.bit_depth, decoded.pixels.channels, decoded.pixels.max_value), (Format::Png, 8, 1, 255.0));
    assert_eq!((decoded.pixels.width, decoded.pixels.height), (4, 3));
    assert_eq!(decoded.pixels.samples[5], 11.0, "x=1, y=1");

    let deep = ImageBuffer::from_fn(2, 2, |x, y| Luma([(x * 30000 + y * 1000) as u16]));
    let decoded = decode(&encode(DynamicImage::ImageLuma16(deep), ImageFormat::Png), &Limits::default()).expect("16-bit");
    assert_eq!((decoded.bit_depth, decoded.pixels.max_value), (16, 65535.0));
    assert_eq!(decoded.pixels.samples, [0.0, 30000.0, 1000.0, 31000.0]);

    let colour = ImageBuffer::from_fn(2, 1, |x, _| Rgb([x as u8, 100, 200]));
    let decoded = decode(&encode(DynamicImage::ImageRgb8(colour), ImageFormat::Png), &Limits::default()).expect("RGB");
    assert_eq!((decoded.pixels.channels, decoded.pixels.samples.clone()), (3, vec![0.0, 100.0, 200.0, 1.0, 100.0, 200.0]));
}

#[test]
fn jpeg_decodes() {
    let grey = ImageBuffer::from_fn(16, 16, |_, _| Luma([128u8]));
    let decoded = decode(&encode(DynamicImage::ImageLuma8(grey), ImageFormat::Jpeg), &Limits::default()).expect("JPEG");
    assert_eq!((decoded.format, decoded.pixels.width, decoded.pixels.channels), (Format::Jpeg, 16, 1));
    assert!(decoded.pixels.samples.iter().all(|v| (v - 128.0).abs() <= 2.0));
}

/// The 2x2 16-bit file these tests read: pixels 0, 1000, 2000, 4000.
fn dicom_2x2(photometric: &'static str, rescale: Option<(f64, f64)>, window: Option<(f64, f64)>, rows: u16, columns: u16) -> Vec<u8> {
    let pixel_data = Some(dicom_value!(U16, [0, 1000, 2000, 4000]).into());
    dicom(DicomSpec { photometric, rescale, window, rows, columns, pixel_data, ..DicomSpec::default() })
}

#[test]
fn dicom_applies_rescale_window_and_monochrome1() {
    // No window: min-max over the rescaled values.
    let plain = decode(&dicom_2x2("MONOCHROME2", None, None, 2, 2), &Limits::default()).expect("DICOM");
    assert_eq!((plain.format, plain.bit_depth, plain.pixels.max_value), (Format::Dicom, 12, 1.0));
    assert_eq!(plain.pixels.samples, [0.0, 0.25, 0.5, 1.0]);
    // MONOCHROME1: bright is low; inverted to MONOCHROME2's sense.
    let inverted = decode(&dicom_2x2("MONOCHROME1", None, None, 2, 2), &Limits::default()).expect("MONOCHROME1");
    assert_eq!(inverted.pixels.samples, [1.0, 0.75, 0.5, 0.0]);
    // Rescale to -1000..3000, window centre 0 width 2001: [-1000, 1000] -> [0, 1].
    let windowed = decode(&dicom_2x2("MONOCHROME2", Some((1.0, -1000.0)), Some((0.0, 2001.0)), 2, 2), &Limits::default()).expect("window");
    let s = &windowed.pixels.samples;
    assert!(s[0].abs() < 1e-3 && (s[1] - 0.5).abs() < 1e-3 && s[2] == 1.0 && s[3] == 1.0, "{s:?}");
}

#[test]
fn oversized_corrupt_and_unknown_inputs_are_refused_before_decoding() {
    let limits = Limits { max_bytes: 1 << 20, max_side: 1000, max_pixels: 500_000 };
    // A DICOM header claiming 60000 x 60000 pixels (with 4 pixels of data).
    assert!(matches!(decode(&dicom_2x2("MONOCHROME2", None, None, 60000, 60000), &limits), Err(DecodeError::TooLarge { .. })));
    // A PNG whose header claims 100000 x 100000 (a decompression bomb's shape).
    let mut png = encode(DynamicImage::ImageLuma8(ImageBuffer::from_fn(8, 8, |_, _| Luma([0u8]))), ImageFormat::Png);
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    assert!(matches!(decode(&png, &limits), Err(DecodeError::TooLarge { width: 100_000, .. })));
    assert!(matches!(decode(&vec![0u8; 2 << 20], &limits), Err(DecodeError::TooManyBytes { .. })));
    assert!(matches!(decode(b"GIF89a....", &limits), Err(DecodeError::UnknownFormat)));
    assert!(matches!(decode(b"", &limits), Err(DecodeError::Empty)));
    assert!(matches!(decode(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDRtruncated", &limits), Err(DecodeError::Corrupt { format: Format::Png, .. })));
    let mut truncated = dicom_2x2("MONOCHROME2", None, None, 2, 2);
    truncated.truncate(200);
    assert!(matches!(decode(&truncated, &limits), Err(DecodeError::Corrupt { format: Format::Dicom, .. })));
}

/// PNG's CRC-32 (for patching a header in the test).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// An 8-bit MONOCHROME2 file with this transfer syntax and pixel data.
fn dicom_8bit(transfer_syntax: &'static str, columns: u16, rows: u16, pixel_data: dicom_core::value::Value<InMemDicomObject, Vec<u8>>) -> Vec<u8> {
    dicom(DicomSpec { transfer_syntax, columns, rows, bits_allocated: 8, bits_stored: 8, pixel_data: Some(pixel_data), ..DicomSpec::default() })
}

#[test]
fn dicom_rle_lossless_decodes() {
    // 4x2 pixels, one RLE segment: a header (1 segment at offset 64), then
    // one literal run of 8 bytes (control byte 7).
    let pixels: [u8; 8] = [0, 32, 64, 96, 128, 160, 192, 255];
    let mut segment = Vec::new();
    segment.extend_from_slice(&1u32.to_le_bytes());
    segment.extend_from_slice(&64u32.to_le_bytes());
    segment.extend_from_slice(&[0u8; 56]);
    segment.push(7);
    segment.extend_from_slice(&pixels);
    segment.push(0); // even length
    let value: dicom_core::value::Value<InMemDicomObject, Vec<u8>> =
        dicom_core::value::Value::PixelSequence(dicom_core::value::PixelFragmentSequence::new(Vec::<u32>::new(), vec![segment]));
    let bytes = dicom_8bit("1.2.840.10008.1.2.5", 4, 2, value);
    let decoded = decode(&bytes, &Limits::default()).expect("RLE Lossless");
    assert_eq!((decoded.pixels.width, decoded.pixels.height), (4, 2));
    let expected: Vec<f32> = pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    assert_eq!(decoded.pixels.samples, expected, "min-max VOI over 0..255");
}

#[test]
fn dicom_jpeg_baseline_decodes() {
    use dicom_pixeldata::Transcode;
    let pixels: Vec<u8> = (0..64u32 * 64).map(|i| ((i % 64) * 4) as u8).collect();
    let native = dicom_8bit("1.2.840.10008.1.2.1", 64, 64, dicom_core::value::Value::from(PrimitiveValue::U8(pixels.into())));
    let mut object = dicom_object::OpenFileOptions::new().from_reader(&native[128..]).expect("read");
    object.transcode(&dicom_transfer_syntax_registry::entries::JPEG_BASELINE.erased()).expect("encode JPEG baseline");
    let mut jpeg = Vec::new();
    object.write_all(&mut jpeg).expect("write");
    let decoded = decode(&jpeg, &Limits::default()).expect("JPEG baseline");
    assert_eq!((decoded.format, decoded.pixels.width, decoded.pixels.height), (Format::Dicom, 64, 64));
    // Lossy, but the gradient survives: left edge dark, right edge bright.
    assert!(decoded.pixels.samples[0] < 0.1 && decoded.pixels.samples[63] > 0.9, "{:?}", &decoded.pixels.samples[..4]);
}

#[test]
fn an_unsupported_transfer_syntax_says_so() {
    // JPEG 2000 (no decoder in this build), with a fragment of junk.
    let value: dicom_core::value::Value<InMemDicomObject, Vec<u8>> =
        dicom_core::value::Value::PixelSequence(dicom_core::value::PixelFragmentSequence::new(Vec::<u32>::new(), vec![vec![0u8; 16]]));
    let bytes = dicom_8bit("1.2.840.10008.1.2.4.90", 4, 2, value);
    match decode(&bytes, &Limits::default()) {
        Err(DecodeError::Unsupported { format: Format::Dicom, reason }) => assert!(reason.contains("1.2.840.10008.1.2.4.90"), "{reason}"),
        other => panic!("expected an unsupported transfer syntax, got {other:?}"),
    }
}
