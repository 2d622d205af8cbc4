//! From an image file to a model input: decoded and preprocessed exactly as
//! the server does (`cxr_inference`), then, for training, augmented on the
//! preprocessed planes with a seeded affine warp and brightness/contrast.

use std::path::Path;

use cxr_inference::decode::{Limits, decode};
use cxr_inference::models::Preprocessing;
use cxr_inference::preprocess::{imagenet_input, xrv_input};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::data::{DataError, read_error};
use crate::settings::TrainSettings;

/// Channels and side of one input.
pub fn input_shape(preprocessing: Preprocessing) -> (usize, usize) {
    match preprocessing {
        Preprocessing::Xrv224 => (1, 224),
        Preprocessing::Imagenet224 => (3, 224),
    }
}

/// The span of input values a brightness shift is a share of: XRV's
/// [-1024, 1024]; ImageNet-normalised values span about 1 / 0.226.
fn value_range(preprocessing: Preprocessing) -> f32 {
    match preprocessing {
        Preprocessing::Xrv224 => 2048.0,
        Preprocessing::Imagenet224 => 4.4,
    }
}

/// Reads, decodes (same limits as the server) and preprocesses one file.
pub fn load(path: &Path, preprocessing: Preprocessing) -> Result<Vec<f32>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    let decoded = decode(&bytes, &Limits::default()).map_err(|e| read_error(path, e))?;
    Ok(match preprocessing {
        Preprocessing::Xrv224 => xrv_input(&decoded.pixels, 224).0.values,
        Preprocessing::Imagenet224 => imagenet_input(&decoded.pixels, 256, 224).0,
    })
}

/// The augmentation of one view, drawn from a seed: the same (seed, epoch,
/// image) always gives the same view.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct View {
    pub angle: f32,
    pub scale: f32,
    pub shift: (f32, f32),
    pub brightness: f32,
    pub contrast: f32,
    pub flip: bool,
}

impl View {
    pub fn draw(settings: &TrainSettings, epoch: usize, image: usize) -> Self {
        let seed = settings.seed ^ ((epoch as u64) << 40) ^ (image as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sym = |limit: f64| if limit > 0.0 { rng.random_range(-limit..=limit) as f32 } else { 0.0 };
        let angle = sym(settings.rotation_degrees).to_radians();
        let scale = 1.0 + sym(settings.scale);
        let shift = (sym(settings.shift), sym(settings.shift));
        let brightness = sym(settings.brightness);
        let contrast = 1.0 + sym(settings.contrast);
        let flip = settings.flip && rng.random_bool(0.5);
        Self { angle, scale, shift, brightness, contrast, flip }
    }
}

/// Applies `view` to `channels` planes of `side x side` in place: the
/// affine warp samples bilinearly with edges repeated, then brightness and
/// contrast (around each plane's mean).
pub fn augment(values: &mut [f32], channels: usize, side: usize, view: &View, preprocessing: Preprocessing) {
    let (sin, cos) = view.angle.sin_cos();
    let half = side as f32 / 2.0;
    let range = value_range(preprocessing);
    let mut out = vec![0f32; side * side];
    for c in 0..channels {
        let plane = &mut values[c * side * side..(c + 1) * side * side];
        for y in 0..side {
            for x in 0..side {
                // Inverse map: output pixel -> source position.
                let (mut u, v) = (x as f32 + 0.5 - half - view.shift.0 * side as f32, y as f32 + 0.5 - half - view.shift.1 * side as f32);
                if view.flip {
                    u = -u;
                }
                let sx = (cos * u + sin * v) / view.scale + half - 0.5;
                let sy = (-sin * u + cos * v) / view.scale + half - 0.5;
                out[y * side + x] = bilinear(plane, side, sx, sy);
            }
        }
        let mean = out.iter().sum::<f32>() / out.len() as f32;
        for (dst, &src) in plane.iter_mut().zip(&out) {
            *dst = mean + (src - mean) * view.contrast + view.brightness * range;
        }
    }
}

fn bilinear(plane: &[f32], side: usize, x: f32, y: f32) -> f32 {
    let max = (side - 1) as f32;
    let (x, y) = (x.clamp(0.0, max), y.clamp(0.0, max));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(side - 1), (y0 + 1).min(side - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| plane[yy * side + xx];
    (at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx) * (1.0 - fy) + (at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx) * fy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_view_changes_nothing() {
        let mut values: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let before = values.clone();
        let view = View { angle: 0.0, scale: 1.0, shift: (0.0, 0.0), brightness: 0.0, contrast: 1.0, flip: false };
        augment(&mut values, 1, 4, &view, Preprocessing::Xrv224);
        for (a, b) in values.iter().zip(&before) {
            assert!((a - b).abs() < 1e-4, "{values:?}");
        }
    }

    #[test]
    fn a_flip_mirrors_rows() {
        let mut values: Vec<f32> = (0..9).map(|v| v as f32).collect();
        let view = View { angle: 0.0, scale: 1.0, shift: (0.0, 0.0), brightness: 0.0, contrast: 1.0, flip: true };
        augment(&mut values, 1, 3, &view, Preprocessing::Xrv224);
        assert_eq!(&values[..3], &[2.0, 1.0, 0.0]);
    }
}
