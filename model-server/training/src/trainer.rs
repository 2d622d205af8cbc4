//! The training loop: two phases (backbone frozen, then its last units
//! unfrozen), AdamW, reduce-on-plateau, early stopping on the validation
//! loss, the best weights kept, a checkpoint after every epoch (and on a
//! stop request) that a restarted run resumes from.
//!
//! Frozen units run in evaluation mode (running statistics, no gradient);
//! unfrozen units in training mode (batch statistics, running statistics
//! updated with momentum 0.1, as PyTorch's `train()`). When the frozen
//! units' outputs for the whole data fit in `cache_limit_mib`, they are
//! computed once (one augmented view per training image) and each epoch
//! only runs the trainable part; otherwise every batch runs the whole
//! network on freshly augmented images.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::{D, DType, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::TrainError;
use crate::data::{Example, LabelKind};
use crate::inputs::{self, View};
use crate::model::Model;
use crate::optim::{AdamW, EarlyStopping, ReduceOnPlateau};
use crate::settings::TrainSettings;

/// One epoch's figures (also the metric lines and MLflow's metrics).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub phase: String,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_auc: Option<f64>,
    pub learning_rate: f64,
    pub seconds: f64,
    pub images_per_second: f64,
}

/// What a checkpoint remembers besides the tensors.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// Identifies the run (data digest + settings): another run's
    /// checkpoint is not resumed.
    pub run_key: String,
    pub phase: usize,
    /// The next epoch to run in `phase`.
    pub epoch: usize,
    pub learning_rate: f64,
    pub optimizer_step: u64,
    pub plateau: ReduceOnPlateau,
    pub early_stopping: EarlyStopping,
    pub best_val_loss: f64,
    pub best_epoch: Option<usize>,
    pub history: Vec<EpochRecord>,
    pub finished: bool,
}

pub struct Phase {
    pub name: &'static str,
    /// Backbone units frozen.
    pub frozen: usize,
    pub epochs: usize,
    pub learning_rate: f64,
}

pub fn phases(settings: &TrainSettings, units: usize) -> Vec<Phase> {
    let mut out = vec![Phase { name: "frozen", frozen: units, epochs: settings.epochs_frozen, learning_rate: settings.learning_rate }];
    if settings.epochs_unfrozen > 0 && settings.unfreeze_units > 0 {
        out.push(Phase {
            name: "unfrozen",
            // The stem stays frozen: candle 0.11 has no backward pass for
            // its overlapping max-pool (kernel 3, stride 2).
            frozen: units.saturating_sub(settings.unfreeze_units).max(1),
            epochs: settings.epochs_unfrozen,
            learning_rate: settings.learning_rate_unfrozen,
        });
    }
    out
}

/// The loss of a run, with its class weights.
pub struct Criterion {
    pub kind: LabelKind,
    pub weights: Tensor,
}

impl Criterion {
    /// Class weights from the training split's label frequencies (or all 1).
    pub fn new(kind: LabelKind, train: &[Example], labels: usize, weighted: bool, device: &candle_core::Device) -> Result<Self, TrainError> {
        let n = train.len().max(1) as f32;
        let positives: Vec<f32> = (0..labels).map(|l| train.iter().filter(|e| e.targets[l] > 0.5).count() as f32).collect();
        let weights: Vec<f32> = match (weighted, kind) {
            (false, _) => vec![1.0; labels],
            (true, LabelKind::MultiLabel) => positives.iter().map(|&p| ((n - p) / p.max(1.0)).clamp(0.1, 100.0)).collect(),
            (true, LabelKind::Exclusive) => positives.iter().map(|&p| (n / (labels as f32 * p.max(1.0))).clamp(0.01, 100.0)).collect(),
        };
        Ok(Self { kind, weights: Tensor::from_vec(weights, labels, device)? })
    }

    pub fn loss(&self, logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        match self.kind {
            LabelKind::MultiLabel => crate::loss::bce_with_logits(logits, targets, &self.weights),
            LabelKind::Exclusive => crate::loss::cross_entropy(logits, targets, &self.weights),
        }
    }

    /// Probabilities from logits (sigmoid or softmax), as rows.
    pub fn probabilities(&self, logits: &Tensor) -> candle_core::Result<Vec<Vec<f32>>> {
        let p = match self.kind {
            LabelKind::MultiLabel => candle_nn::ops::sigmoid(logits)?,
            LabelKind::Exclusive => candle_nn::ops::softmax(logits, D::Minus1)?,
        };
        p.to_dtype(DType::F32)?.to_vec2()
    }
}

/// Inputs of a split at the frozen boundary: cached tensors, or loaded and
/// run through the frozen units batch by batch.
pub struct Source<'a> {
    pub examples: &'a [Example],
    pub augment: bool,
    /// Per cached boundary (frozen units): one `(1, ...)` tensor per example.
    pub cache: Vec<(usize, Vec<Tensor>)>,
}

/// Runs the frozen units on `examples` in evaluation mode (no gradient).
fn frozen_outputs(
    model: &Model,
    settings: &TrainSettings,
    examples: &[Example],
    indices: &[usize],
    frozen: usize,
    augment_epoch: Option<usize>,
) -> Result<Tensor, TrainError> {
    let x = images(model, settings, examples, indices, augment_epoch)?;
    continue_frozen(model, &x, 0, frozen)
}

/// A batch of model inputs, augmented when `augment_epoch` says which view.
fn images(model: &Model, settings: &TrainSettings, examples: &[Example], indices: &[usize], augment_epoch: Option<usize>) -> Result<Tensor, TrainError> {
    let preprocessing = model.manifest.preprocessing;
    let (channels, side) = inputs::input_shape(preprocessing);
    let mut flat = Vec::with_capacity(indices.len() * channels * side * side);
    for &i in indices {
        let mut values = inputs::load(&examples[i].path, preprocessing)?;
        if let Some(epoch) = augment_epoch {
            inputs::augment(&mut values, channels, side, &View::draw(settings, epoch, i), preprocessing);
        }
        flat.extend_from_slice(&values);
    }
    Ok(Tensor::from_vec(flat, (indices.len(), channels, side, side), &model.device)?)
}

/// Frozen units `from..to` in evaluation mode; with the whole backbone
/// frozen only the pooled features are kept (all the head reads).
fn continue_frozen(model: &Model, x: &Tensor, from: usize, to: usize) -> Result<Tensor, TrainError> {
    let units = model.network.units();
    if from == units {
        return Ok(x.clone());
    }
    let out = model.network.forward_units(x, from..to, false)?;
    let out = if to == units { out.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)? } else { out };
    Ok(out.detach())
}

impl Source<'_> {
    fn batch(&self, model: &Model, settings: &TrainSettings, indices: &[usize], frozen: usize, epoch: usize) -> Result<Tensor, TrainError> {
        match self.cache.iter().find(|(level, _)| *level == frozen) {
            Some((_, cached)) => Ok(Tensor::cat(&indices.iter().map(|&i| cached[i].clone()).collect::<Vec<_>>(), 0)?),
            None => frozen_outputs(model, settings, self.examples, indices, frozen, self.augment.then_some(epoch)),
        }
    }

    fn targets(&self, indices: &[usize], device: &candle_core::Device) -> Result<Tensor, TrainError> {
        let labels = self.examples.first().map_or(0, |e| e.targets.len());
        let flat: Vec<f32> = indices.iter().flat_map(|&i| self.examples[i].targets.clone()).collect();
        Ok(Tensor::from_vec(flat, (indices.len(), labels), device)?)
    }
}

/// Caches the split's outputs at boundary `frozen` when they fit in the
/// limit: from a shallower cached boundary when there is one (the frozen
/// units before it are not run again), else from the images.
pub fn cache(model: &Model, settings: &TrainSettings, source: &mut Source, frozen: usize) -> Result<(), TrainError> {
    if source.cache.iter().any(|(level, _)| *level == frozen) || source.examples.is_empty() {
        return Ok(());
    }
    let shallower = source.cache.iter().filter(|(level, _)| *level < frozen).max_by_key(|(level, _)| *level).map(|(level, _)| *level);
    let probe = match shallower {
        Some(level) => {
            let (_, cached) = source.cache.iter().find(|(l, _)| *l == level).ok_or_else(|| TrainError::Model("cache".into()))?;
            continue_frozen(model, &cached[0], level, frozen)?
        }
        None => frozen_outputs(model, settings, source.examples, &[0], frozen, None)?,
    };
    let bytes = probe.elem_count() * 4 * source.examples.len();
    if bytes > settings.cache_limit_mib << 20 {
        tracing::info!(mib = bytes >> 20, limit = settings.cache_limit_mib, "frozen outputs do not fit the cache: running the whole network each batch");
        return Ok(());
    }
    let started = Instant::now();
    let mut cached = Vec::with_capacity(source.examples.len());
    let indices: Vec<usize> = (0..source.examples.len()).collect();
    for chunk in indices.chunks(settings.batch_size.max(1)) {
        let out = match shallower {
            Some(level) => {
                let (_, from) = source.cache.iter().find(|(l, _)| *l == level).ok_or_else(|| TrainError::Model("cache".into()))?;
                let x = Tensor::cat(&chunk.iter().map(|&i| from[i].clone()).collect::<Vec<_>>(), 0)?;
                continue_frozen(model, &x, level, frozen)?
            }
            None => frozen_outputs(model, settings, source.examples, chunk, frozen, source.augment.then_some(0))?,
        };
        for i in 0..chunk.len() {
            cached.push(out.narrow(0, i, 1)?.copy()?);
        }
    }
    // How much the features differ between images (0: all alike).
    let all = Tensor::cat(&cached, 0)?.flatten_from(1)?;
    let spread = (all.var_keepdim(0)?.sqrt()?.mean_all()?.to_scalar::<f32>()? / (all.abs()?.mean_all()?.to_scalar::<f32>()? + 1e-12)) as f64;
    tracing::info!(
        images = source.examples.len(),
        boundary = frozen,
        mib = bytes >> 20,
        seconds = started.elapsed().as_secs_f64(),
        spread,
        "frozen outputs cached"
    );
    source.cache.push((frozen, cached));
    Ok(())
}

/// With the whole backbone frozen, the head learns on standardised pooled
/// features (each channel's training mean and standard deviation): random
/// or pretrained backbones hand it features with a large common part and
/// small differences between images, on which a linear head learns slowly.
/// The cached features of both splits are replaced; the phase's end folds
/// the standardisation into the head's first layer (`W / std`,
/// `b - W mean / std`), so the network is unchanged.
fn standardize<'a>(train: &mut Source<'a>, validation: &mut Source<'a>, level: usize) -> Result<Option<(Tensor, Tensor)>, TrainError> {
    let Some((_, cached)) = train.cache.iter().find(|(l, _)| *l == level) else { return Ok(None) };
    if cached.len() < 2 {
        return Ok(None);
    }
    let all = Tensor::cat(cached, 0)?;
    let mean = all.mean_keepdim(0)?;
    let std = (all.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?.sqrt()? + 1e-6)?;
    for source in [train, validation] {
        if let Some((_, tensors)) = source.cache.iter_mut().find(|(l, _)| *l == level) {
            for t in tensors.iter_mut() {
                *t = t.broadcast_sub(&mean)?.broadcast_div(&std)?;
            }
        }
    }
    Ok(Some((mean.flatten_all()?, std.flatten_all()?)))
}

/// Folds a standardisation of the head's input into its first linear layer.
fn fold_standardization(weights: &mut HashMap<String, Tensor>, head: &str, mean: &Tensor, std: &Tensor) -> Result<(), TrainError> {
    let layer = if weights.contains_key(&format!("{head}0.weight")) { format!("{head}0.") } else { head.to_owned() };
    let (w_name, b_name) = (format!("{layer}weight"), format!("{layer}bias"));
    let (Some(w), Some(b)) = (weights.get(&w_name), weights.get(&b_name)) else {
        return Err(TrainError::Model(format!("no {w_name} / {b_name} to fold the standardisation into")));
    };
    let folded = w.broadcast_div(&std.unsqueeze(0)?)?;
    let shift = folded.matmul(&mean.unsqueeze(1)?)?.squeeze(1)?;
    let bias = (b - shift)?;
    weights.insert(w_name, folded);
    weights.insert(b_name, bias);
    Ok(())
}

/// Logits of a batch from the frozen boundary: the trainable units (in
/// training mode when `train`), then the head (with dropout when `train`).
pub fn logits(model: &Model, boundary: &Tensor, frozen: usize, train: bool, dropout: f64, rng: &mut ChaCha8Rng) -> candle_core::Result<Tensor> {
    let maps = model.network.forward_units(boundary, frozen..model.network.units(), train)?;
    let rng = std::cell::RefCell::new(rng);
    let drop = |x: &Tensor| -> candle_core::Result<Tensor> {
        if !train || dropout <= 0.0 {
            return Ok(x.clone());
        }
        // A seeded mask (candle's own dropout draws from an unseeded
        // generator), scaled by 1 / (1 - p) as PyTorch does.
        let keep: Vec<f32> = {
            let mut rng = rng.borrow_mut();
            (0..x.elem_count()).map(|_| if rng.random_bool(dropout) { 0.0 } else { (1.0 / (1.0 - dropout)) as f32 }).collect()
        };
        x * Tensor::from_vec(keep, x.shape(), x.device())?
    };
    model.network.classify_with_dropout(&maps, &drop)
}

/// Loss and probabilities over a split, in evaluation mode.
pub fn evaluate(model: &Model, settings: &TrainSettings, criterion: &Criterion, source: &Source, frozen: usize) -> Result<(f64, Vec<Vec<f32>>), TrainError> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut total, mut probabilities) = (0.0, Vec::new());
    let indices: Vec<usize> = (0..source.examples.len()).collect();
    for chunk in indices.chunks(settings.batch_size.max(1)) {
        let boundary = source.batch(model, settings, chunk, frozen, 0)?;
        let out = logits(model, &boundary, frozen, false, 0.0, &mut rng)?;
        let targets = source.targets(chunk, &model.device)?;
        total += criterion.loss(&out, &targets)?.to_scalar::<f32>()? as f64 * chunk.len() as f64;
        probabilities.extend(criterion.probabilities(&out)?);
    }
    Ok((total / source.examples.len().max(1) as f64, probabilities))
}

/// Mean ROC-AUC over the labels that have both classes.
pub fn mean_auc(probabilities: &[Vec<f32>], examples: &[Example]) -> Option<f64> {
    let labels = examples.first()?.targets.len();
    let aucs: Vec<f64> = (0..labels)
        .filter_map(|l| {
            let scores: Vec<f32> = probabilities.iter().map(|p| p[l]).collect();
            let truth: Vec<bool> = examples.iter().map(|e| e.targets[l] > 0.5).collect();
            crate::metrics::roc_auc(&scores, &truth)
        })
        .collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

/// Named tensors (weights, optimiser moments).
pub type Tensors = HashMap<String, Tensor>;

/// Checkpoint files in `dir`.
pub struct Checkpoints<'a> {
    pub dir: &'a Path,
}

impl Checkpoints<'_> {
    fn paths(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        (self.dir.join("checkpoint.json"), self.dir.join("checkpoint.safetensors"))
    }

    /// Writes aside and renames, tensors first: a crash leaves the previous
    /// checkpoint whole.
    pub fn save(&self, progress: &Progress, tensors: &HashMap<String, Tensor>) -> Result<(), TrainError> {
        std::fs::create_dir_all(self.dir).map_err(|e| TrainError::Io(self.dir.to_owned(), e))?;
        let (json, weights) = self.paths();
        let tmp_weights = weights.with_extension("safetensors.partial");
        candle_core::safetensors::save(tensors, &tmp_weights)?;
        std::fs::rename(&tmp_weights, &weights).map_err(|e| TrainError::Io(weights.clone(), e))?;
        let tmp_json = json.with_extension("json.partial");
        let text = serde_json::to_string_pretty(progress).map_err(|e| TrainError::Model(e.to_string()))?;
        std::fs::write(&tmp_json, text).map_err(|e| TrainError::Io(tmp_json.clone(), e))?;
        std::fs::rename(&tmp_json, &json).map_err(|e| TrainError::Io(json.clone(), e))?;
        Ok(())
    }

    /// The checkpoint of this run, if there is one.
    pub fn load(&self, run_key: &str, device: &candle_core::Device) -> Result<Option<(Progress, Tensors)>, TrainError> {
        let (json, weights) = self.paths();
        let Ok(text) = std::fs::read_to_string(&json) else { return Ok(None) };
        let progress: Progress = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable checkpoint ignored");
                return Ok(None);
            }
        };
        if progress.run_key != run_key {
            tracing::warn!(path = %json.display(), "a checkpoint of another run (other data or settings) is ignored");
            return Ok(None);
        }
        Ok(Some((progress, candle_core::safetensors::load(&weights, device)?)))
    }
}

/// What [`train`] hands back.
pub struct Trained {
    pub progress: Progress,
    /// Units frozen in the last phase run (the stored-trained-only file
    /// holds the parameters after them).
    pub last_frozen: usize,
}

/// Runs (or resumes) the phases; on return the model holds the best
/// weights. `on_epoch` sees every epoch's record (metric lines, MLflow).
#[allow(clippy::too_many_arguments)]
pub fn train(
    model: &Model,
    settings: &TrainSettings,
    criterion: &Criterion,
    train: &[Example],
    validation: &[Example],
    run_key: &str,
    stop: &AtomicBool,
    on_epoch: &mut dyn FnMut(&EpochRecord),
) -> Result<Trained, TrainError> {
    let checkpoints = Checkpoints { dir: &settings.checkpoint_dir };
    let phases = phases(settings, model.network.units());
    let mut progress = Progress {
        run_key: run_key.to_owned(),
        phase: 0,
        epoch: 0,
        learning_rate: phases[0].learning_rate,
        optimizer_step: 0,
        plateau: ReduceOnPlateau::new(settings.plateau_factor, settings.plateau_patience, settings.min_learning_rate),
        early_stopping: EarlyStopping::new(settings.early_stopping_patience),
        best_val_loss: f64::INFINITY,
        best_epoch: None,
        history: Vec::new(),
        finished: false,
    };
    let mut best: Option<HashMap<String, Tensor>> = None;
    let mut resumed_optimizer: Option<HashMap<String, Tensor>> = None;
    if let Some((saved, tensors)) = checkpoints.load(run_key, &model.device)? {
        tracing::info!(phase = saved.phase, epoch = saved.epoch, "resuming from the checkpoint");
        let pick = |prefix: &str| -> HashMap<String, Tensor> {
            tensors.iter().filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_owned(), v.clone()))).collect()
        };
        model.restore(&pick("w."))?;
        let b = pick("best.");
        best = (!b.is_empty()).then_some(b);
        resumed_optimizer = Some(tensors.iter().filter(|(k, _)| k.starts_with("m.") || k.starts_with("v.")).map(|(k, v)| (k.clone(), v.clone())).collect());
        progress = saved;
    }
    if model.generated_base.is_some() && progress.history.is_empty() && progress.phase == 0 {
        let n = train.len().min(settings.calibration_images);
        let indices: Vec<usize> = (0..train.len()).step_by((train.len() / n.max(1)).max(1)).take(n).collect();
        let started = Instant::now();
        let x = images(model, settings, train, &indices, None)?;
        model.calibrate_batch_norm(&x)?;
        tracing::info!(images = indices.len(), seconds = started.elapsed().as_secs_f64(), "batch-norm statistics estimated for the generated weights");
    }
    let mut train_source = Source { examples: train, augment: settings.augment, cache: Vec::new() };
    let mut validation_source = Source { examples: validation, augment: false, cache: Vec::new() };
    // The shallowest boundary first: the deeper ones are computed from it.
    if let Some(shallowest) = phases.iter().skip(progress.phase).map(|p| p.frozen).min() {
        cache(model, settings, &mut train_source, shallowest)?;
        cache(model, settings, &mut validation_source, shallowest)?;
    }
    let mut last_frozen = phases[0].frozen;
    while progress.phase < phases.len() && !progress.finished {
        let phase = &phases[progress.phase];
        last_frozen = phase.frozen;
        cache(model, settings, &mut train_source, phase.frozen)?;
        cache(model, settings, &mut validation_source, phase.frozen)?;
        let standardized = if phase.frozen == model.network.units() { standardize(&mut train_source, &mut validation_source, phase.frozen)? } else { None };
        let mut optimizer = AdamW::new(model.trainable(phase.frozen), progress.learning_rate, settings.weight_decay);
        if let Some(state) = resumed_optimizer.take() {
            optimizer.restore(&state, progress.optimizer_step);
        }
        tracing::info!(phase = phase.name, frozen_units = phase.frozen, trainable_tensors = optimizer.params.len(), "phase");
        while progress.epoch < phase.epochs {
            let started = Instant::now();
            let epoch_number = progress.history.len() + 1;
            let mut order: Vec<usize> = (0..train.len()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(epoch_number as u64));
            order.shuffle(&mut rng);
            let (mut total, mut seen) = (0.0, 0usize);
            optimizer.lr = progress.learning_rate;
            // A last batch of one has no batch statistics: drop it (PyTorch's
            // `drop_last` for the same reason).
            for chunk in order.chunks(settings.batch_size.max(2)).filter(|c| c.len() > 1) {
                if stop.load(Ordering::Relaxed) {
                    progress.optimizer_step = optimizer.step;
                    save_checkpoint(&checkpoints, &progress, model, best.as_ref(), &optimizer)?;
                    return Err(TrainError::Stopped);
                }
                let boundary = train_source.batch(model, settings, chunk, phase.frozen, epoch_number)?;
                let targets = train_source.targets(chunk, &model.device)?;
                let out = logits(model, &boundary, phase.frozen, true, settings.dropout, &mut rng)?;
                let loss = criterion.loss(&out, &targets)?;
                let grads = loss.backward()?;
                optimizer.step(&grads)?;
                total += loss.to_scalar::<f32>()? as f64 * chunk.len() as f64;
                seen += chunk.len();
            }
            let (val_loss, probabilities) = evaluate(model, settings, criterion, &validation_source, phase.frozen)?;
            let record = EpochRecord {
                epoch: epoch_number,
                phase: phase.name.into(),
                train_loss: total / seen.max(1) as f64,
                val_loss,
                val_auc: mean_auc(&probabilities, validation),
                learning_rate: progress.learning_rate,
                seconds: started.elapsed().as_secs_f64(),
                images_per_second: seen as f64 / started.elapsed().as_secs_f64().max(1e-9),
            };
            on_epoch(&record);
            progress.history.push(record);
            if val_loss < progress.best_val_loss {
                progress.best_val_loss = val_loss;
                progress.best_epoch = Some(epoch_number);
                best = Some(model.snapshot()?);
            }
            progress.learning_rate = progress.plateau.step(val_loss, progress.learning_rate);
            progress.epoch += 1;
            progress.optimizer_step = optimizer.step;
            let stop_phase = progress.early_stopping.should_stop(val_loss);
            if stop_phase {
                tracing::info!(phase = phase.name, epoch = epoch_number, "early stopping: no better validation loss");
                progress.epoch = phase.epochs;
            }
            save_checkpoint(&checkpoints, &progress, model, best.as_ref(), &optimizer)?;
        }
        if let Some((mean, std)) = &standardized {
            let mut current = model.snapshot()?;
            fold_standardization(&mut current, model.network.head_prefix(), mean, std)?;
            model.restore(&current)?;
            if let Some(best) = best.as_mut() {
                fold_standardization(best, model.network.head_prefix(), mean, std)?;
            }
        }
        // The next phase starts from the best weights so far, with a fresh
        // optimiser, schedule and patience.
        if let Some(best) = &best {
            model.restore(best)?;
        }
        progress.phase += 1;
        progress.epoch = 0;
        progress.optimizer_step = 0;
        if let Some(next) = phases.get(progress.phase) {
            progress.learning_rate = next.learning_rate;
            progress.plateau = ReduceOnPlateau::new(settings.plateau_factor, settings.plateau_patience, settings.min_learning_rate);
            progress.early_stopping = EarlyStopping::new(settings.early_stopping_patience);
        }
    }
    if let Some(best) = &best {
        model.restore(best)?;
    }
    progress.finished = true;
    save_checkpoint(&checkpoints, &progress, model, best.as_ref(), &AdamW::new(Vec::new(), 0.0, 0.0))?;
    Ok(Trained { progress, last_frozen })
}

fn save_checkpoint(
    checkpoints: &Checkpoints,
    progress: &Progress,
    model: &Model,
    best: Option<&HashMap<String, Tensor>>,
    optimizer: &AdamW,
) -> Result<(), TrainError> {
    let mut tensors: HashMap<String, Tensor> = model.snapshot()?.into_iter().map(|(k, v)| (format!("w.{k}"), v)).collect();
    if let Some(best) = best {
        tensors.extend(best.iter().map(|(k, v)| (format!("best.{k}"), v.clone())));
    }
    tensors.extend(optimizer.state_tensors());
    checkpoints.save(progress, &tensors)
}
