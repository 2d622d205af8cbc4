//! Image decoding with limits checked from headers before any pixel is
//! decoded, so a decompression bomb (a small file claiming a huge image)
//! is refused without allocating it. PNG (8/16-bit, grey or colour) and
//! JPEG through the `image` crate; DICOM through dicom-rs, with the
//! modality LUT (rescale slope/intercept), the first VOI window
//! (centre/width, linear) and MONOCHROME1 inversion applied.

use std::io::Cursor;

use dicom_dictionary_std::tags;
use dicom_object::file::{OpenFileOptions, ReadPreamble};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutOption};
use image::{DynamicImage, ImageFormat, ImageReader};

use crate::preprocess::Pixels;

/// The platform's image limit (`cxr-domain`), the default of [`Limits::max_bytes`].
pub use cxr_domain::MAX_IMAGE_BYTES;

/// Limits on what a request may make the server decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_side: u32,
    pub max_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_bytes: MAX_IMAGE_BYTES as usize, max_side: 16384, max_pixels: 16384 * 16384 }
    }
}

/// The file formats the decoder reads (the answer's `image.format`).
pub use cxr_domain::invocation::ImageFormat as Format;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the body is empty")]
    Empty,
    #[error("the file is {bytes} bytes; the limit is {limit}")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("the image is {width}x{height}; at most {max_side} pixels a side and {max_pixels} pixels in all are accepted")]
    TooLarge { width: u64, height: u64, max_side: u32, max_pixels: u64 },
    #[error("not a PNG, JPEG or DICOM file (by its first bytes)")]
    UnknownFormat,
    #[error("corrupt {format:?} file: {reason}")]
    Corrupt { format: Format, reason: String },
    #[error("unsupported {format:?} content: {reason}")]
    Unsupported { format: Format, reason: String },
}

/// A decoded image ready for preprocessing.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub format: Format,
    pub pixels: Pixels,
    /// Bits per sample in the file.
    pub bit_depth: u16,
}

/// Which format the first bytes say (never the client's content type).
/// The same rule as `cxr_platform::domain::MediaType::sniff`, kept here so
/// the model server does not link the platform's AWS and database crates.
pub fn sniff(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(Format::Png)
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(Format::Jpeg)
    } else if bytes.get(128..132) == Some(b"DICM") {
        Some(Format::Dicom)
    } else {
        None
    }
}

pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(DecodeError::TooManyBytes { bytes: bytes.len(), limit: limits.max_bytes });
    }
    match sniff(bytes).ok_or(DecodeError::UnknownFormat)? {
        Format::Png => decode_raster(bytes, ImageFormat::Png, Format::Png, limits),
        Format::Jpeg => decode_raster(bytes, ImageFormat::Jpeg, Format::Jpeg, limits),
        Format::Dicom => decode_dicom(bytes, limits),
    }
}

fn check_size(width: u64, height: u64, limits: &Limits) -> Result<(), DecodeError> {
    let too_large =
        width == 0 || height == 0 || width > u64::from(limits.max_side) || height > u64::from(limits.max_side) || width * height > limits.max_pixels;
    if too_large {
        return Err(DecodeError::TooLarge { width, height, max_side: limits.max_side, max_pixels: limits.max_pixels });
    }
    Ok(())
}

fn decode_raster(bytes: &[u8], image_format: ImageFormat, format: Format, limits: &Limits) -> Result<Decoded, DecodeError> {
    let corrupt = |e: image::ImageError| DecodeError::Corrupt { format, reason: e.to_string() };
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), image_format).into_dimensions().map_err(corrupt)?;
    check_size(u64::from(width), u64::from(height), limits)?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), image_format);
    let mut image_limits = image::Limits::default();
    image_limits.max_image_width = Some(limits.max_side);
    image_limits.max_image_height = Some(limits.max_side);
    reader.limits(image_limits);
    let image = reader.decode().map_err(corrupt)?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let (channels, bit_depth, max_value, samples): (usize, u16, f32, Vec<f32>) = match image {
        DynamicImage::ImageLuma8(img) => (1, 8, 255.0, img.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageLumaA8(img) => (1, 8, 255.0, img.pixels().map(|p| f32::from(p.0[0])).collect()),
        DynamicImage::ImageLuma16(img) => (1, 16, 65535.0, img.into_raw().into_iter().map(f32::from).collect()),
        DynamicImage::ImageLumaA16(img) => (1, 16, 65535.0, img.pixels().map(|p| f32::from(p.0[0])).collect()),
        DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_) => (3, 16, 65535.0, image.to_rgb16().into_raw().into_iter().map(f32::from).collect()),
        other => (3, 8, 255.0, other.to_rgb8().into_raw().into_iter().map(f32::from).collect()),
    };
    Ok(Decoded { format, pixels: Pixels { width, height, channels, samples, max_value }, bit_depth })
}

fn decode_dicom(bytes: &[u8], limits: &Limits) -> Result<Decoded, DecodeError> {
    let format = Format::Dicom;
    let corrupt = |reason: String| DecodeError::Corrupt { format, reason };
    cxr_dicom_guard::check_lengths(bytes).map_err(|e| match e {
        cxr_dicom_guard::LengthError::Deflated => DecodeError::Unsupported { format, reason: e.to_string() },
        cxr_dicom_guard::LengthError::LongerThanFile { .. } | cxr_dicom_guard::LengthError::Unwalkable(_) => corrupt(e.to_string()),
    })?;
    let object = OpenFileOptions::new().read_preamble(ReadPreamble::Auto).from_reader(Cursor::new(bytes)).map_err(|e| corrupt(e.to_string()))?;
    let number = |tag| object.get(tag).and_then(|e| e.to_int::<u64>().ok());
    let (rows, columns) = match (number(tags::ROWS), number(tags::COLUMNS)) {
        (Some(rows), Some(columns)) => (rows, columns),
        _ => return Err(corrupt("no Rows/Columns attributes".into())),
    };
    // Checked before the pixel data is decoded (only the first frame is).
    check_size(columns, rows, limits)?;
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(corrupt("no Pixel Data".into()));
    }
    let decoded = object.decode_pixel_data_frame(0).map_err(|e| {
        let reason = e.to_string();
        if reason.to_lowercase().contains("unsupported") || reason.to_lowercase().contains("not supported") {
            DecodeError::Unsupported { format, reason: format!("transfer syntax {}: {reason}", object.meta().transfer_syntax().trim_end_matches('\0')) }
        } else {
            corrupt(reason)
        }
    })?;
    let (width, height) = (decoded.columns() as usize, decoded.rows() as usize);
    let bits = decoded.bits_stored();
    let spp = usize::from(decoded.samples_per_pixel());
    // Modality LUT (rescale) applied, no VOI: raw values in modality units.
    let options = ConvertOptions::new().with_voi_lut(VoiLutOption::Identity);
    let values: Vec<f32> = decoded.to_vec_frame_with_options(0, &options).map_err(|e| corrupt(e.to_string()))?;
    if values.len() != width * height * spp {
        return Err(corrupt(format!("{} samples for a {width}x{height}x{spp} frame", values.len())));
    }
    let pixels = if spp == 1 {
        let monochrome1 = decoded.photometric_interpretation().as_str().trim() == "MONOCHROME1";
        let window = window(&object);
        Pixels { width, height, channels: 1, samples: voi(values, window, monochrome1), max_value: 1.0 }
    } else {
        Pixels { width, height, channels: spp, samples: values, max_value: ((1u64 << bits.min(32)) - 1) as f32 }
    };
    Ok(Decoded { format, pixels, bit_depth: bits })
}

/// The first Window Center / Window Width pair, if any.
fn window(object: &dicom_object::DefaultDicomObject) -> Option<(f64, f64)> {
    let first = |tag| object.get(tag).and_then(|e| e.to_multi_float64().ok()).and_then(|v| v.first().copied());
    match (first(tags::WINDOW_CENTER), first(tags::WINDOW_WIDTH)) {
        (Some(center), Some(width)) if width >= 1.0 => Some((center, width)),
        _ => None,
    }
}

/// The VOI transform to [0, 1]: the linear window of PS3.3 C.11.2.1.2 when
/// the file has one, else min-max; MONOCHROME1 (white = low) inverted so
/// that, as in MONOCHROME2, bright means dense.
fn voi(values: Vec<f32>, window: Option<(f64, f64)>, monochrome1: bool) -> Vec<f32> {
    let map: Box<dyn Fn(f64) -> f64> = match window {
        Some((c, w)) => Box::new(move |x| {
            if x <= c - 0.5 - (w - 1.0) / 2.0 {
                0.0
            } else if x > c - 0.5 + (w - 1.0) / 2.0 {
                1.0
            } else {
                (x - (c - 0.5)) / (w - 1.0) + 0.5
            }
        }),
        None => {
            let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(f64::from(v)), hi.max(f64::from(v))));
            let range = (hi - lo).max(f64::MIN_POSITIVE);
            Box::new(move |x| (x - lo) / range)
        }
    };
    values
        .into_iter()
        .map(|v| {
            let y = map(f64::from(v)).clamp(0.0, 1.0);
            (if monochrome1 { 1.0 - y } else { y }) as f32
        })
        .collect()
}
