//! Synthetic chest phantoms: seeded, radiograph-like images (body, lungs,
//! heart, spine, ribs, clavicles, diaphragm domes) with four findings, each
//! with its box, written as PNG or DICOM in the folder-per-class layout of
//! the public pneumonia / COVID-19 datasets or in the COCO layout of our
//! data mart. They are for tests, the local demo model and the web app's
//! demo; a model trained on them has learned shapes, not radiology.
//!
//! Intensities follow attenuation (bone and fluid bright, air dark) as a
//! MONOCHROME2 radiograph shows them. Each patient varies in position,
//! size, exposure and noise; a finding changes one region:
//! - `Cardiomegaly`: the heart 35-60 % wider (cardiothoracic ratio > 0.5);
//! - `Effusion`: fluid filling one lung's base up to a meniscus;
//! - `Lung Opacity`: a soft-edged lobar opacity inside one lung;
//! - `Nodule`: a small round dense spot inside one lung.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// The findings, in label order. Names are TorchXRayVision's.
pub const FINDINGS: [&str; 4] = ["Cardiomegaly", "Effusion", "Lung Opacity", "Nodule"];
/// The folder-per-class layout's class without a finding (as the public
/// pneumonia dataset names it).
pub const NORMAL: &str = "NORMAL";
/// Written at the root of every generated set: readers mark models trained
/// on it as trained on synthetic data.
pub const MARKER: &str = "PHANTOMS.json";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    Png,
    Dicom,
    /// Every third image DICOM, the rest PNG.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `train/<class>/<file>` and `test/<class>/<file>` (`NORMAL` for none).
    Folder,
    /// `images/<id>.<ext>` and `annotations/instances_{train,test}.json`.
    Coco,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhantomSettings {
    pub count: usize,
    pub seed: u64,
    /// Width and height in pixels.
    pub size: usize,
    /// Share of images without a finding.
    pub normal_fraction: f64,
    /// Share of patients written to the `test` split.
    pub test_fraction: f64,
    /// Studies per patient, at most (1..=this).
    pub studies_per_patient: usize,
    /// Which findings occur (indices into [`FINDINGS`]); empty: all.
    #[serde(default)]
    pub findings: Vec<usize>,
}

impl Default for PhantomSettings {
    fn default() -> Self {
        Self { count: 200, seed: 7, size: 256, normal_fraction: 0.4, test_fraction: 0.2, studies_per_patient: 2, findings: Vec::new() }
    }
}

/// One labelled box, `[x_min, y_min, width, height]` in pixels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingBox {
    pub label: String,
    pub bbox: [f64; 4],
}

#[derive(Clone, Debug)]
pub struct Phantom {
    pub patient: usize,
    pub study: usize,
    pub test: bool,
    /// The finding's index in [`FINDINGS`], `None` for a normal image.
    pub finding: Option<usize>,
    pub boxes: Vec<FindingBox>,
    /// `size * size` values in [0, 1], row-major.
    pub pixels: Vec<f32>,
    pub size: usize,
}

/// Generates `settings.count` phantoms: the same settings give the same
/// images, bit for bit.
pub fn generate(settings: &PhantomSettings) -> Vec<Phantom> {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut out = Vec::with_capacity(settings.count);
    let mut patient = 0;
    while out.len() < settings.count {
        patient += 1;
        let anatomy = Anatomy::random(&mut rng);
        let test = rng.random_bool(settings.test_fraction.clamp(0.0, 1.0));
        let studies = rng.random_range(1..=settings.studies_per_patient.max(1));
        for study in 1..=studies {
            if out.len() == settings.count {
                break;
            }
            let finding = if rng.random_bool(settings.normal_fraction.clamp(0.0, 1.0)) {
                None
            } else if settings.findings.is_empty() {
                Some(rng.random_range(0..FINDINGS.len()))
            } else {
                Some(settings.findings[rng.random_range(0..settings.findings.len())] % FINDINGS.len())
            };
            let (pixels, boxes) = draw(&anatomy, finding, settings.size, &mut rng);
            out.push(Phantom { patient, study, test, finding, boxes, pixels, size: settings.size });
        }
    }
    out
}

/// One patient's geometry, in units of the image side.
#[derive(Clone, Debug)]
struct Anatomy {
    cx: f64,
    cy: f64,
    body: (f64, f64),
    lung: (f64, f64),
    lung_gap: f64,
    heart: (f64, f64),
    gain: f64,
    offset: f64,
    tilt: f64,
}

impl Anatomy {
    fn random(rng: &mut ChaCha8Rng) -> Self {
        let n = |rng: &mut ChaCha8Rng, sd: f64| Normal::new(0.0, sd).map(|d| d.sample(rng)).unwrap_or(0.0);
        Self {
            cx: 0.5 + n(rng, 0.02),
            cy: 0.5 + n(rng, 0.02),
            body: (0.42 + n(rng, 0.02), 0.52 + n(rng, 0.02)),
            lung: (0.12 + n(rng, 0.008), 0.25 + n(rng, 0.015)),
            lung_gap: 0.17 + n(rng, 0.008),
            heart: (0.13 + n(rng, 0.008), 0.11 + n(rng, 0.006)),
            gain: 1.0 + n(rng, 0.07),
            offset: n(rng, 0.03),
            tilt: n(rng, 0.03),
        }
    }
}

/// 1 inside the ellipse, 0 outside, a soft edge of relative width `soft`.
fn ellipse(x: f64, y: f64, cx: f64, cy: f64, rx: f64, ry: f64, soft: f64) -> f64 {
    let d = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
    ((1.0 - d) / soft).clamp(0.0, 1.0)
}

fn band(distance: f64, half_width: f64) -> f64 {
    (1.0 - distance.abs() / half_width).clamp(0.0, 1.0)
}

fn draw(a: &Anatomy, finding: Option<usize>, size: usize, rng: &mut ChaCha8Rng) -> (Vec<f32>, Vec<FindingBox>) {
    let lungs = [(a.cx - a.lung_gap, a.cy - 0.05), (a.cx + a.lung_gap, a.cy - 0.05)];
    let enlarged = finding == Some(0);
    let heart_scale = if enlarged { (rng.random_range(1.35..1.6), rng.random_range(1.1..1.25)) } else { (1.0, 1.0) };
    let heart = (a.cx + 0.04, a.cy + 0.06, a.heart.0 * heart_scale.0, a.heart.1 * heart_scale.1);
    let side = rng.random_range(0..2usize);
    let (lx, ly) = lungs[side];
    // The diaphragm dome under each lung: lungs end above it.
    let dome = |x: f64, centre: f64| a.cy - 0.05 + a.lung.1 * 0.82 - 0.07 * (1.0 - ((x - centre) / a.lung.0).powi(2)).max(0.0);
    // Finding geometry (in image units), then its box.
    let effusion_level = dome(lx, lx) - rng.random_range(0.07..0.14);
    let opacity = (lx + rng.random_range(-0.04..0.04), ly + rng.random_range(-0.1..0.08), rng.random_range(0.06..0.09), rng.random_range(0.07..0.11));
    let nodule = (lx + rng.random_range(-0.05..0.05), ly + rng.random_range(-0.12..0.1), rng.random_range(0.015..0.028));
    let noise = Normal::new(0.0, 0.018).ok();
    let mut pixels = Vec::with_capacity(size * size);
    let (mut min_x, mut min_y, mut max_x, mut max_y) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for row in 0..size {
        for col in 0..size {
            let (x0, y0) = ((col as f64 + 0.5) / size as f64, (row as f64 + 0.5) / size as f64);
            // A small tilt of the whole patient.
            let (x, y) = (a.cx + (x0 - a.cx) * a.tilt.cos() - (y0 - a.cy) * a.tilt.sin(), a.cy + (x0 - a.cx) * a.tilt.sin() + (y0 - a.cy) * a.tilt.cos());
            let body = ellipse(x, y, a.cx, a.cy + 0.05, a.body.0, a.body.1, 0.08);
            let mut v = 0.05 + 0.5 * body;
            let mut lung_here = [0.0; 2];
            for (i, &(cx, cy)) in lungs.iter().enumerate() {
                let inside = ellipse(x, y, cx, cy, a.lung.0, a.lung.1, 0.12) * if y < dome(x, cx) { 1.0 } else { 0.0 };
                lung_here[i] = inside;
            }
            let lung = lung_here[0].max(lung_here[1]);
            v -= 0.32 * lung;
            // Heart: soft tissue in front of the lungs, denser than the
            // tissue around it.
            let h = ellipse(x, y, heart.0, heart.1, heart.2, heart.3, 0.15);
            v += h * (0.28 * lung + 0.08);
            // Spine and ribs (posterior arcs), clavicles.
            v += 0.12 * band(x - a.cx, 0.03) * body;
            for k in 0..9 {
                let y_rib = a.cy - 0.26 + 0.062 * k as f64 + 0.12 * ((x - a.cx) / 0.3).powi(2);
                v += 0.07 * band(y - y_rib, 0.009) * body * if (x - a.cx).abs() > 0.04 { 1.0 } else { 0.0 };
            }
            for s in [-1.0, 1.0] {
                let t = (x - a.cx) * s;
                if (0.04..0.32).contains(&t) {
                    let y_clav = a.cy - 0.3 - 0.15 * (t - 0.04);
                    v += 0.14 * band(y - y_clav, 0.012);
                }
            }
            // The finding.
            let lung_side = lung_here[side];
            let added = match finding {
                Some(1) if lung_side > 0.0 => {
                    let meniscus = effusion_level - 0.05 * ((x - lx) / a.lung.0 * if side == 0 { -1.0 } else { 1.0 }).max(0.0);
                    if y > meniscus { 0.3 * lung_side } else { 0.0 }
                }
                Some(2) => 0.2 * ellipse(x, y, opacity.0, opacity.1, opacity.2, opacity.3, 0.5) * lung_side,
                Some(3) => 0.28 * ellipse(x, y, nodule.0, nodule.1, nodule.2, nodule.2, 0.3) * lung_side,
                _ => 0.0,
            };
            if added > 0.02 {
                min_x = min_x.min(x0);
                min_y = min_y.min(y0);
                max_x = max_x.max(x0);
                max_y = max_y.max(y0);
            }
            v += added;
            let n = noise.map(|d| d.sample(rng)).unwrap_or(0.0);
            pixels.push(((v * a.gain + a.offset + n).clamp(0.0, 1.0)) as f32);
        }
    }
    let s = size as f64;
    let boxes = match finding {
        None => Vec::new(),
        Some(0) => {
            vec![FindingBox { label: FINDINGS[0].into(), bbox: [(heart.0 - heart.2) * s, (heart.1 - heart.3) * s, 2.0 * heart.2 * s, 2.0 * heart.3 * s] }]
        }
        Some(f) if max_x > min_x => {
            vec![FindingBox { label: FINDINGS[f].into(), bbox: [min_x * s, min_y * s, (max_x - min_x) * s + 1.0, (max_y - min_y) * s + 1.0] }]
        }
        // The finding fell outside the lung (rare): the image keeps its
        // label, without a box.
        Some(_) => Vec::new(),
    };
    (pixels, boxes)
}

impl Phantom {
    /// `p0001_s1`: the patient before the first `_` (the folder reader
    /// groups by it).
    pub fn stem(&self) -> String {
        format!("p{:04}_s{}", self.patient, self.study)
    }

    pub fn class(&self) -> &'static str {
        self.finding.map_or(NORMAL, |f| FINDINGS[f])
    }

    fn is_dicom(&self, format: FileFormat, index: usize) -> bool {
        match format {
            FileFormat::Png => false,
            FileFormat::Dicom => true,
            FileFormat::Mixed => index % 3 == 2,
        }
    }

    /// 8-bit grey PNG.
    pub fn png(&self) -> Result<Vec<u8>, image::ImageError> {
        let bytes: Vec<u8> = self.pixels.iter().map(|&v| (v * 255.0).round() as u8).collect();
        let img = image::GrayImage::from_raw(self.size as u32, self.size as u32, bytes)
            .ok_or_else(|| image::ImageError::Parameter(image::error::ParameterError::from_kind(image::error::ParameterErrorKind::DimensionMismatch)))?;
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)?;
        Ok(out.into_inner())
    }

    /// A DX DICOM file, 12 bits stored in 16, MONOCHROME2, with a synthetic
    /// patient id (no real person is described).
    pub fn dicom(&self) -> Result<Vec<u8>, String> {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        use dicom_object::InMemDicomObject;
        use dicom_object::meta::FileMetaTableBuilder;
        let samples: Vec<u16> = self.pixels.iter().map(|&v| (v * 4095.0).round() as u16).collect();
        let side = self.size as u16;
        let sop_instance = format!("2.25.{}{:04}{}", 1_000_000 + self.patient, self.study, self.size);
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.1.1")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(sop_instance.as_str())),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("DX")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(format!("PHANTOM-{:04}", self.patient))),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Phantom^Synthetic")),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("Synthetic chest phantom, not a patient")),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(side)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(side)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(samples.into())),
        ]);
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.1.1")
            .media_storage_sop_instance_uid(sop_instance.as_str())
            .transfer_syntax("1.2.840.10008.1.2.1");
        let file = object.with_meta(meta).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        file.write_all(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    fn encode(&self, format: FileFormat, index: usize) -> Result<(Vec<u8>, &'static str), PhantomError> {
        if self.is_dicom(format, index) {
            Ok((self.dicom().map_err(PhantomError::Encode)?, "dcm"))
        } else {
            Ok((self.png().map_err(|e| PhantomError::Encode(e.to_string()))?, "png"))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PhantomError {
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("encoding a phantom: {0}")]
    Encode(String),
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), PhantomError> {
    let io = |source| PhantomError::Io { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

/// What [`write_set`] wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Written {
    pub images: usize,
    pub per_class: std::collections::BTreeMap<String, usize>,
    pub test_images: usize,
}

/// Generates and writes a set under `root` in `layout`, with the marker
/// file that records the settings.
pub fn write_set(root: &Path, settings: &PhantomSettings, layout: Layout, format: FileFormat) -> Result<Written, PhantomError> {
    let phantoms = generate(settings);
    let mut per_class = std::collections::BTreeMap::new();
    for p in &phantoms {
        *per_class.entry(p.class().to_owned()).or_insert(0) += 1;
    }
    match layout {
        Layout::Folder => {
            for (i, p) in phantoms.iter().enumerate() {
                let (bytes, ext) = p.encode(format, i)?;
                let split = if p.test { "test" } else { "train" };
                write(&root.join(split).join(p.class()).join(format!("{}.{ext}", p.stem())), &bytes)?;
            }
        }
        Layout::Coco => {
            let categories: Vec<_> =
                FINDINGS.iter().enumerate().map(|(i, name)| serde_json::json!({"id": i + 1, "name": name, "supercategory": "finding"})).collect();
            let mut splits: [(Vec<serde_json::Value>, Vec<serde_json::Value>); 2] = Default::default();
            let mut annotation_id = 0;
            for (i, p) in phantoms.iter().enumerate() {
                let (bytes, ext) = p.encode(format, i)?;
                let id = i + 1;
                let file_name = format!("images/{id:010}.{ext}");
                write(&root.join(&file_name), &bytes)?;
                let (images, annotations) = &mut splits[usize::from(p.test)];
                images.push(serde_json::json!({"id": id, "file_name": file_name, "width": p.size, "height": p.size, "license": 1, "patient_id": format!("p{:04}", p.patient)}));
                for b in &p.boxes {
                    annotation_id += 1;
                    let category = FINDINGS.iter().position(|f| *f == b.label).map_or(0, |c| c + 1);
                    annotations.push(serde_json::json!({"id": annotation_id, "image_id": id, "category_id": category, "bbox": b.bbox, "area": b.bbox[2] * b.bbox[3], "iscrowd": 0}));
                }
                // A finding without a box still labels the image (the
                // reader's image-level labels), as an annotation without
                // a box cannot say in COCO: give it the whole image.
                if p.boxes.is_empty()
                    && let Some(f) = p.finding
                {
                    annotation_id += 1;
                    let s = p.size as f64;
                    annotations.push(
                        serde_json::json!({"id": annotation_id, "image_id": id, "category_id": f + 1, "bbox": [0.0, 0.0, s, s], "area": s * s, "iscrowd": 0}),
                    );
                }
            }
            for (name, (images, annotations)) in ["train", "test"].iter().zip(splits) {
                let file = serde_json::json!({
                    "info": {"description": "Synthetic chest phantoms (not patients)", "version": "1", "year": 2026, "contributor": "cxr-training phantoms", "url": "", "date_created": ""},
                    "licenses": [{"id": 1, "name": "Synthetic", "url": ""}],
                    "images": images, "annotations": annotations, "categories": categories,
                });
                write(&root.join(format!("annotations/instances_{name}.json")), serde_json::to_string(&file).unwrap_or_default().as_bytes())?;
            }
        }
    }
    let marker = serde_json::json!({"synthetic": true, "generator": "cxr-training phantoms", "settings": settings, "layout": layout, "format": format, "findings": FINDINGS});
    write(&root.join(MARKER), serde_json::to_string_pretty(&marker).unwrap_or_default().as_bytes())?;
    Ok(Written { images: phantoms.len(), per_class, test_images: phantoms.iter().filter(|p| p.test).count() })
}

/// The demo model's recipe as flags (`ml-pipeline/params.yaml` holds the
/// same values for `dvc repro`): the head on the frozen backbone, then
/// `norm5` unfrozen; augmentation off, since the frozen outputs are cached
/// from one view per image.
pub const DEMO_RECIPE: [&str; 16] = [
    "--epochs-frozen",
    "40",
    "--learning-rate",
    "0.003",
    "--epochs-unfrozen",
    "5",
    "--unfreeze-units",
    "1",
    "--dropout",
    "0.2",
    "--early-stopping-patience",
    "8",
    "--plateau-patience",
    "3",
    "--augment",
    "false",
];
