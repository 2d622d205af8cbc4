//! Grad-CAM heatmaps and CAM-derived boxes.
//!
//! For the heads used here (global average pooling followed by a linear
//! layer, or by Linear -> ReLU -> Linear), the gradient of a label's logit
//! with respect to the last feature maps is the same at every position, so
//! Grad-CAM's channel weights are computed exactly without autograd: for a
//! linear head they are the label's classifier row (Grad-CAM equals CAM),
//! for the MLP head `W1^T (W2[label] * relu'(W1 p + b1))`. The map is
//! `ReLU(sum_c alpha_c A_c)` on the last feature maps (after the final
//! ReLU for DenseNet, the output of `layer4` for ResNet), scaled to [0, 1],
//! upsampled bilinearly onto the crop the model saw, and placed in the
//! original image's frame.
//!
//! Boxes: the map (at most [`MAP_SIDE`] pixels on the long side) is
//! thresholded at [`BOX_THRESHOLD`] of its peak; each 4-connected region is
//! a box in original-image pixels, scored by its peak value.

use std::collections::VecDeque;

use serde::Serialize;

use crate::preprocess::CropWindow;

/// Long side of the heatmap sent back (the web app scales it up).
pub const MAP_SIDE: usize = 512;
/// Fraction of the peak above which the map counts as part of a box.
pub const BOX_THRESHOLD: f32 = 0.5;
/// Regions smaller than this share of the map are noise, not boxes.
const MIN_REGION_SHARE: f64 = 0.002;

/// A box in original-image pixels, top-left origin.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CamBox {
    pub x_min: f32,
    pub y_min: f32,
    pub width: f32,
    pub height: f32,
    /// The region's peak heatmap value (0..1).
    pub score: f32,
}

/// A heatmap in the original image's frame at reduced resolution.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    pub width: usize,
    pub height: usize,
    /// 0..1, row-major.
    pub values: Vec<f32>,
    /// Original pixels per heatmap pixel.
    pub scale: f64,
}

/// `ReLU(sum_c weights[c] * maps[c])`, scaled to [0, 1] (all zeros when the
/// label has no positive evidence). `maps` is `channels x (h * w)`.
pub fn cam(maps: &[f32], channels: usize, weights: &[f32]) -> Vec<f32> {
    let size = maps.len() / channels.max(1);
    let mut out = vec![0.0f32; size];
    for (c, weight) in weights.iter().enumerate().take(channels) {
        for (o, &a) in out.iter_mut().zip(&maps[c * size..(c + 1) * size]) {
            *o += weight * a;
        }
    }
    let peak = out.iter().copied().fold(0.0f32, f32::max);
    out.iter_mut().for_each(|v| *v = if peak > 0.0 { v.max(0.0) / peak } else { 0.0 });
    out
}

/// Places a `grid x grid` CAM onto the original image (`width x height`),
/// over the crop the model saw, at most [`MAP_SIDE`] on the long side.
pub fn to_original(cam: &[f32], grid: usize, window: CropWindow, width: usize, height: usize) -> Heatmap {
    let scale = (width.max(height) as f64 / MAP_SIDE as f64).max(1.0);
    let (out_w, out_h) = (((width as f64) / scale).round().max(1.0) as usize, ((height as f64) / scale).round().max(1.0) as usize);
    let mut values = vec![0.0f32; out_w * out_h];
    let cell = window.side as f64 / grid as f64;
    let at = |gy: isize, gx: isize| -> f32 {
        let (gy, gx) = (gy.clamp(0, grid as isize - 1) as usize, gx.clamp(0, grid as isize - 1) as usize);
        cam[gy * grid + gx]
    };
    for y in 0..out_h {
        for x in 0..out_w {
            // Original-pixel centre of this heatmap pixel, relative to the crop.
            let ox = (x as f64 + 0.5) * scale - window.x as f64;
            let oy = (y as f64 + 0.5) * scale - window.y as f64;
            if ox < 0.0 || oy < 0.0 || ox >= window.side as f64 || oy >= window.side as f64 {
                continue;
            }
            // Bilinear between CAM cell centres.
            let (fx, fy) = (ox / cell - 0.5, oy / cell - 0.5);
            let (x0, y0) = (fx.floor(), fy.floor());
            let (tx, ty) = ((fx - x0) as f32, (fy - y0) as f32);
            let (x0, y0) = (x0 as isize, y0 as isize);
            values[y * out_w + x] = (1.0 - ty) * ((1.0 - tx) * at(y0, x0) + tx * at(y0, x0 + 1)) + ty * ((1.0 - tx) * at(y0 + 1, x0) + tx * at(y0 + 1, x0 + 1));
        }
    }
    Heatmap { width: out_w, height: out_h, values, scale }
}

/// 4-connected regions at or above `BOX_THRESHOLD` of the peak, as boxes in
/// original pixels, highest score first.
pub fn boxes(map: &Heatmap) -> Vec<CamBox> {
    let peak = map.values.iter().copied().fold(0.0f32, f32::max);
    if peak <= 0.0 {
        return Vec::new();
    }
    let threshold = BOX_THRESHOLD * peak;
    let (w, h) = (map.width, map.height);
    let mut seen = vec![false; w * h];
    let mut found = Vec::new();
    for start in 0..w * h {
        if seen[start] || map.values[start] < threshold {
            continue;
        }
        let (mut x_min, mut y_min, mut x_max, mut y_max, mut count, mut best) = (w, h, 0, 0, 0usize, 0.0f32);
        let mut queue = VecDeque::from([start]);
        seen[start] = true;
        while let Some(i) = queue.pop_front() {
            let (x, y) = (i % w, i / w);
            (x_min, y_min, x_max, y_max) = (x_min.min(x), y_min.min(y), x_max.max(x), y_max.max(y));
            count += 1;
            best = best.max(map.values[i]);
            let neighbours = [(x > 0).then(|| i - 1), (x + 1 < w).then(|| i + 1), (y > 0).then(|| i - w), (y + 1 < h).then(|| i + w)];
            for j in neighbours.into_iter().flatten() {
                if !seen[j] && map.values[j] >= threshold {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        if (count as f64) < MIN_REGION_SHARE * (w * h) as f64 {
            continue;
        }
        let s = map.scale as f32;
        found.push(CamBox {
            x_min: x_min as f32 * s,
            y_min: y_min as f32 * s,
            width: (x_max - x_min + 1) as f32 * s,
            height: (y_max - y_min + 1) as f32 * s,
            score: best,
        });
    }
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found
}

/// The heatmap as an RGBA PNG overlay: a blue-to-red colour scale whose
/// opacity grows with the value (transparent where there is no evidence).
pub fn overlay_png(map: &Heatmap) -> Result<Vec<u8>, image::ImageError> {
    let mut rgba = Vec::with_capacity(map.values.len() * 4);
    for &v in &map.values {
        let v = v.clamp(0.0, 1.0);
        // A compact "jet": blue -> cyan -> yellow -> red.
        let r = (1.5 - (4.0 * v - 3.0).abs()).clamp(0.0, 1.0);
        let g = (1.5 - (4.0 * v - 2.0).abs()).clamp(0.0, 1.0);
        let b = (1.5 - (4.0 * v - 1.0).abs()).clamp(0.0, 1.0);
        rgba.extend_from_slice(&[(r * 255.0) as u8, (g * 255.0) as u8, (b * 255.0) as u8, (v * 160.0) as u8]);
    }
    let mut out = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut out),
        &rgba,
        map.width as u32,
        map.height as u32,
        image::ExtendedColorType::Rgba8,
    )?;
    Ok(out)
}

/// A browser-viewable 8-bit PNG of the decoded image (DICOM after its
/// rescale, window and MONOCHROME1 inversion), shrunk so its long side is at
/// most `max_side`: the clinician's preview. Returns the PNG and its size.
pub fn preview_png(pixels: &crate::preprocess::Pixels, max_side: u32) -> Result<(Vec<u8>, u32, u32), image::ImageError> {
    let scale = 255.0 / pixels.max_value.max(f32::MIN_POSITIVE);
    let bytes: Vec<u8> = pixels.samples.iter().map(|&v| (v * scale).round().clamp(0.0, 255.0) as u8).collect();
    let (w, h) = (pixels.width as u32, pixels.height as u32);
    let image = match pixels.channels {
        3 => image::RgbImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageRgb8),
        _ => image::GrayImage::from_raw(w, h, bytes).map(image::DynamicImage::ImageLuma8),
    }
    .ok_or_else(|| image::ImageError::Parameter(image::error::ParameterError::from_kind(image::error::ParameterErrorKind::DimensionMismatch)))?;
    let image = if w.max(h) > max_side { image.resize(max_side, max_side, image::imageops::FilterType::Triangle) } else { image };
    let mut out = Vec::new();
    image.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)?;
    Ok((out, image.width(), image.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_8_bit_pngs_no_larger_than_asked() {
        let pixels = crate::preprocess::Pixels { width: 300, height: 150, channels: 1, samples: vec![0.5; 300 * 150], max_value: 1.0 };
        let (png, w, h) = preview_png(&pixels, 100).expect("preview");
        assert_eq!((w, h), (100, 50));
        let back = image::load_from_memory(&png).expect("a PNG").to_luma8();
        assert_eq!((back.width(), back.height(), back.get_pixel(10, 10).0[0]), (100, 50, 128));
        let (_, w, h) = preview_png(&pixels, 1024).expect("small stays");
        assert_eq!((w, h), (300, 150));
    }

    #[test]
    fn cam_weighs_channels_and_keeps_positive_evidence() {
        // Two channels of 2x2: the first lights the top-left, the second the bottom-right.
        let maps = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0];
        assert_eq!(cam(&maps, 2, &[1.0, 0.0]), [1.0, 0.0, 0.0, 0.0]);
        assert_eq!(cam(&maps, 2, &[1.0, 1.0]), [0.5, 0.0, 0.0, 1.0]);
        assert_eq!(cam(&maps, 2, &[-1.0, 0.0]), [0.0; 4], "negative evidence only: nothing");
    }

    #[test]
    fn a_hot_cell_becomes_a_box_in_original_pixels() {
        // 7x7 grid, hot at row 1, column 5; a 1000x800 image whose crop is
        // the central 800x800 square (x offset 100).
        let mut grid = vec![0.0f32; 49];
        grid[7 + 5] = 1.0;
        let window = CropWindow { x: 100, y: 0, side: 800 };
        let map = to_original(&grid, 7, window, 1000, 800);
        assert_eq!((map.width, map.height), (512, 410));
        let found = boxes(&map);
        assert_eq!(found.len(), 1);
        let b = &found[0];
        // Cell (5, 1) covers x 100 + 571..686, y 114..229 in the original.
        let (cx, cy) = (b.x_min + b.width / 2.0, b.y_min + b.height / 2.0);
        assert!((cx - 728.0).abs() < 25.0 && (cy - 171.0).abs() < 25.0, "{b:?}");
        assert!(b.x_min >= 100.0 && b.x_min + b.width <= 900.0);
        assert!(overlay_png(&map).expect("png").starts_with(b"\x89PNG"));
    }
}
