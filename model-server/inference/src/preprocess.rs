//! Preprocessing exactly as the models were trained with.
//!
//! TorchXRayVision: `xrv.utils.normalize(img, maxval)`, that is
//! `(2 * img / maxval - 1) * 1024` in f32; colour channels averaged; `XRayCenterCrop` (the
//! central square of the short side), then `XRayResizer(224)`, which is
//! `skimage.transform.resize(mode="constant", preserve_range=True)`: a
//! Gaussian anti-aliasing filter (sigma = (factor - 1) / 2, truncated at 4
//! sigma, zeros outside) when shrinking, then bilinear sampling at pixel
//! centres (zeros outside). Reproduced here step by step, including the f32
//! rounding between steps, so outputs match to float precision; no image
//! crate resizer does this.

/// A decoded image: raw sample values, row-major, channels interleaved.
#[derive(Clone, Debug, PartialEq)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    pub samples: Vec<f32>,
    /// The largest value a sample can take (255, 65535, 2^bits - 1).
    pub max_value: f32,
}

/// A single-channel plane of f32 values.
#[derive(Clone, Debug, PartialEq)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

/// Where a model input came from in the original image, to map heatmaps and
/// boxes back: the crop's offset and side, in original pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropWindow {
    pub x: usize,
    pub y: usize,
    pub side: usize,
}

/// TorchXRayVision's input: `(1, size, size)` values in about [-1024, 1024].
pub fn xrv_input(pixels: &Pixels, size: usize) -> (Plane, CropWindow) {
    let grey = xrv_normalize(pixels);
    let (cropped, window) = center_crop(&grey);
    (skimage_resize(&cropped, size), window)
}

/// `(2 * (v / maxval) - 1) * 1024` per sample, then the mean over colour
/// channels, in f32 as numpy computes it.
pub fn xrv_normalize(pixels: &Pixels) -> Plane {
    let normalize = |v: f32| (2.0f32 * (v / pixels.max_value) - 1.0f32) * 1024.0f32;
    let values = match pixels.channels {
        1 => pixels.samples.iter().map(|&v| normalize(v)).collect(),
        c => pixels.samples.chunks_exact(c).map(|px| px.iter().map(|&v| normalize(v)).fold(0.0f32, |sum, v| sum + v) / c as f32).collect(),
    };
    Plane { width: pixels.width, height: pixels.height, values }
}

/// The central square of the short side (`XRayCenterCrop`).
pub fn center_crop(plane: &Plane) -> (Plane, CropWindow) {
    let side = plane.width.min(plane.height);
    let x = plane.width / 2 - side / 2;
    let y = plane.height / 2 - side / 2;
    let mut values = Vec::with_capacity(side * side);
    for row in y..y + side {
        values.extend_from_slice(&plane.values[row * plane.width + x..row * plane.width + x + side]);
    }
    (Plane { width: side, height: side, values }, CropWindow { x, y, side })
}

/// `skimage.transform.resize(plane, (size, size), mode="constant", cval=0,
/// preserve_range=True, anti_aliasing=None)` for a square f32 plane.
pub fn skimage_resize(plane: &Plane, size: usize) -> Plane {
    let factor_y = plane.height as f64 / size as f64;
    let factor_x = plane.width as f64 / size as f64;
    let shrinking = plane.height > size || plane.width > size;
    let (low, high) = plane.values.iter().fold((0.0f32, 0.0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    // scipy.ndimage.gaussian_filter (axis by axis, rows then columns, each
    // pass in f64 stored as f32), evaluated only where the bilinear zoom
    // below reads it: about 450 rows and columns of a 3000-pixel side, the
    // same sums in the same order as filtering the whole plane.
    let filtered = if shrinking {
        let (sigma_y, sigma_x) = ((factor_y - 1.0).max(0.0) / 2.0, (factor_x - 1.0).max(0.0) / 2.0);
        Some(SparseFiltered::new(plane, size, (factor_y, factor_x), (sigma_y, sigma_x)))
    } else {
        None
    };
    // scipy.ndimage.zoom(order=1, mode="grid-constant", grid_mode=True):
    // the output pixel centre maps to (o + 0.5) * factor - 0.5; neighbours
    // outside the image count as 0.
    let sample = |row: i64, col: i64| -> f64 {
        if row < 0 || col < 0 || row >= plane.height as i64 || col >= plane.width as i64 {
            0.0
        } else if let Some(f) = &filtered {
            f.get(row as usize, col as usize)
        } else {
            f64::from(plane.values[row as usize * plane.width + col as usize])
        }
    };
    let mut values = Vec::with_capacity(size * size);
    for o_y in 0..size {
        let c_y = (o_y as f64 + 0.5) * factor_y - 0.5;
        let (y0, t_y) = (c_y.floor(), c_y - c_y.floor());
        for o_x in 0..size {
            let c_x = (o_x as f64 + 0.5) * factor_x - 0.5;
            let (x0, t_x) = (c_x.floor(), c_x - c_x.floor());
            let (y0, x0) = (y0 as i64, x0 as i64);
            let value = (1.0 - t_y) * ((1.0 - t_x) * sample(y0, x0) + t_x * sample(y0, x0 + 1))
                + t_y * ((1.0 - t_x) * sample(y0 + 1, x0) + t_x * sample(y0 + 1, x0 + 1));
            // skimage clips to the input's range widened by cval (0).
            values.push((value as f32).clamp(low, high));
        }
    }
    Plane { width: size, height: size, values }
}

/// The indices along one axis that the bilinear zoom to `size` reads.
fn zoom_taps(len: usize, size: usize, factor: f64) -> Vec<usize> {
    let mut taps: Vec<usize> = (0..size)
        .flat_map(|o| {
            let c = ((o as f64 + 0.5) * factor - 0.5).floor() as i64;
            [c, c + 1]
        })
        .filter(|&i| i >= 0 && (i as usize) < len)
        .map(|i| i as usize)
        .collect();
    taps.sort_unstable();
    taps.dedup();
    taps
}

/// `scipy.ndimage.gaussian_filter1d(sigma, truncate=4.0)`'s weights.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut kernel: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp()).collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|w| *w /= total);
    kernel
}

/// The Gaussian-filtered plane (`mode="constant", cval=0`) at the rows and
/// columns the zoom reads.
struct SparseFiltered {
    /// Index into `rows` / `columns` per plane row / column (`usize::MAX`:
    /// not computed).
    row_slot: Vec<usize>,
    column_slot: Vec<usize>,
    columns: usize,
    values: Vec<f32>,
}

impl SparseFiltered {
    fn new(plane: &Plane, size: usize, (factor_y, factor_x): (f64, f64), (sigma_y, sigma_x): (f64, f64)) -> Self {
        let (w, h) = (plane.width, plane.height);
        let rows = zoom_taps(h, size, factor_y);
        let columns = zoom_taps(w, size, factor_x);
        // Pass 1, along rows: every column of the needed rows. Accumulated a
        // whole row at a time (vectorises), tap by tap in kernel order as
        // the per-pixel sum is, so the results are the same.
        let kernel = if sigma_y <= 1e-15 { vec![1.0] } else { gaussian_kernel(sigma_y) };
        let radius = (kernel.len() / 2) as i64;
        let mut pass1 = vec![0.0f32; rows.len() * w];
        let mut sum = vec![0.0f64; w];
        for (slot, &row) in rows.iter().enumerate() {
            sum.iter_mut().for_each(|s| *s = 0.0);
            for (k, &weight) in kernel.iter().enumerate() {
                let r = row as i64 + k as i64 - radius;
                if r >= 0 && r < h as i64 {
                    let source = &plane.values[r as usize * w..(r as usize + 1) * w];
                    sum.iter_mut().zip(source).for_each(|(s, &v)| *s += weight * f64::from(v));
                }
            }
            pass1[slot * w..(slot + 1) * w].iter_mut().zip(&sum).for_each(|(d, &s)| *d = s as f32);
        }
        // Pass 2, along columns: only the needed columns of those rows.
        let kernel = if sigma_x <= 1e-15 { vec![1.0] } else { gaussian_kernel(sigma_x) };
        let radius = (kernel.len() / 2) as i64;
        let mut values = Vec::with_capacity(rows.len() * columns.len());
        for slot in 0..rows.len() {
            let line = &pass1[slot * w..(slot + 1) * w];
            for &col in &columns {
                let mut s = 0.0f64;
                for (k, &weight) in kernel.iter().enumerate() {
                    let c = col as i64 + k as i64 - radius;
                    if c >= 0 && c < w as i64 {
                        s += weight * f64::from(line[c as usize]);
                    }
                }
                values.push(s as f32);
            }
        }
        let slots = |len: usize, taken: &[usize]| {
            let mut slot = vec![usize::MAX; len];
            taken.iter().enumerate().for_each(|(i, &t)| slot[t] = i);
            slot
        };
        Self { row_slot: slots(h, &rows), column_slot: slots(w, &columns), columns: columns.len(), values }
    }

    fn get(&self, row: usize, col: usize) -> f64 {
        let (r, c) = (self.row_slot[row], self.column_slot[col]);
        // The zoom only reads computed slots; anything else is a bug here.
        debug_assert!(r != usize::MAX && c != usize::MAX, "unfiltered sample ({row}, {col})");
        self.values.get(r.wrapping_mul(self.columns).wrapping_add(c)).map_or(0.0, |&v| f64::from(v))
    }
}

/// ImageNet statistics torchvision's pretrained ResNets expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// torchvision's evaluation pipeline for ImageNet-style models, on float
/// tensors (the `transforms.v2` tensor path): samples scaled to [0, 1]
/// (grey replicated to RGB), `Resize(resize)` of the short side with
/// anti-aliased bilinear filtering, `CenterCrop(crop)`, `Normalize(mean,
/// std)`. Returns `(3, crop, crop)` channel-major values and the crop window
/// in original pixels.
pub fn imagenet_input(pixels: &Pixels, resize: usize, crop: usize) -> (Vec<f32>, CropWindow) {
    let (w, h) = (pixels.width, pixels.height);
    // transforms.v2.functional.resize with one size: the short side becomes
    // `resize`, the long side int(resize * long / short).
    let (new_w, new_h) =
        if w <= h { (resize, (resize as f64 * h as f64 / w as f64) as usize) } else { ((resize as f64 * w as f64 / h as f64) as usize, resize) };
    // center_crop: offsets are Python's round() (half to even).
    let top = ((new_h as f64 - crop as f64) / 2.0).round_ties_even() as usize;
    let left = ((new_w as f64 - crop as f64) / 2.0).round_ties_even() as usize;
    let scale_x = w as f64 / new_w as f64;
    let scale_y = h as f64 / new_h as f64;
    let window = CropWindow { x: (left as f64 * scale_x) as usize, y: (top as f64 * scale_y) as usize, side: (crop as f64 * scale_x.min(scale_y)) as usize };

    let mut out = Vec::with_capacity(3 * crop * crop);
    // Only the crop is resampled (the same sums as resizing everything and
    // cropping after), and a grey image once for its three channels.
    let mut resized: Option<Vec<f32>> = None;
    for c in 0..3 {
        if pixels.channels != 1 || resized.is_none() {
            let plane: Vec<f32> = pixels.samples.iter().skip(c.min(pixels.channels - 1)).step_by(pixels.channels).map(|&v| v / pixels.max_value).collect();
            // Separable: along the width first, then the height (ATen's order).
            let horizontal = resample_rows(&plane, w, h, new_w, left..left + crop);
            resized = Some(resample_columns(&horizontal, crop, h, new_h, top..top + crop));
        }
        let resized = resized.as_deref().unwrap_or_default();
        out.extend(resized.iter().map(|&v| (v - IMAGENET_MEAN[c]) / IMAGENET_STD[c]));
    }
    (out, window)
}

/// ATen's anti-aliased bilinear weights (`_compute_indices_min_size_weights_aa`
/// with the triangle filter), in f32 as ATen computes them for f32 tensors:
/// for each output index, the first input index and the normalised weights.
fn aa_weights(input: usize, output: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f32 / output as f32;
    let support = if scale >= 1.0 { scale } else { 1.0 };
    let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..output)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut weights: Vec<f32> = (xmin..xmax)
                .map(|j| {
                    let x = ((j - xmin) as f32 + xmin as f32 - center + 0.5) * invscale;
                    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
                })
                .collect();
            let total: f32 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (xmin, weights)
        })
        .collect()
}

/// Output columns `columns` of the width-wise resampling to `new_w`.
fn resample_rows(plane: &[f32], w: usize, h: usize, new_w: usize, columns: std::ops::Range<usize>) -> Vec<f32> {
    let weights = aa_weights(w, new_w);
    let mut out = Vec::with_capacity(columns.len() * h);
    for row in plane.chunks_exact(w).take(h) {
        for (start, ws) in &weights[columns.clone()] {
            out.push(ws.iter().enumerate().fold(0.0f32, |sum, (k, wt)| sum + wt * row[start + k]));
        }
    }
    out
}

/// Output rows `rows` of the height-wise resampling of a `w`-wide plane to `new_h`.
fn resample_columns(plane: &[f32], w: usize, h: usize, new_h: usize, rows: std::ops::Range<usize>) -> Vec<f32> {
    let weights = aa_weights(h, new_h);
    let mut out = vec![0.0f32; w * rows.len()];
    for (y, (start, ws)) in weights[rows].iter().enumerate() {
        for x in 0..w {
            out[y * w + x] = ws.iter().enumerate().fold(0.0f32, |sum, (k, wt)| sum + wt * plane[(start + k) * w + x]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_takes_the_central_square() {
        let plane = Plane { width: 5, height: 3, values: (0..15).map(|v| v as f32).collect() };
        let (crop, window) = center_crop(&plane);
        assert_eq!(window, CropWindow { x: 1, y: 0, side: 3 });
        assert_eq!(crop.values, [1.0, 2.0, 3.0, 6.0, 7.0, 8.0, 11.0, 12.0, 13.0]);
    }

    #[test]
    fn normalization_maps_the_range_to_plus_minus_1024() {
        let pixels = Pixels { width: 3, height: 1, channels: 1, samples: vec![0.0, 127.5, 255.0], max_value: 255.0 };
        assert_eq!(xrv_normalize(&pixels).values, [-1024.0, 0.0, 1024.0]);
        let rgb = Pixels { width: 1, height: 1, channels: 3, samples: vec![0.0, 255.0, 255.0], max_value: 255.0 };
        assert!((xrv_normalize(&rgb).values[0] - 341.333_34).abs() < 1e-3);
    }

    #[test]
    fn resizing_a_constant_image_keeps_it_away_from_the_edges() {
        let plane = Plane { width: 40, height: 40, values: vec![100.0; 1600] };
        let out = skimage_resize(&plane, 10);
        // Zero padding darkens the border (as in skimage), not the centre.
        assert!((out.values[5 * 10 + 5] - 100.0).abs() < 1e-3);
        assert!(out.values[0] < 100.0);
    }
}
