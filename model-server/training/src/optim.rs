//! The optimiser and schedules, as PyTorch defines them, with state that
//! checkpoints can save and restore (candle-nn's `AdamW` keeps its moments
//! private, so a resumed run would restart them; this one does not).

use std::collections::HashMap;

use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

/// `torch.optim.AdamW`: decoupled weight decay, bias-corrected moments.
pub struct AdamW {
    pub params: Vec<(String, Var)>,
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: u64,
    moments: HashMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, lr: f64, weight_decay: f64) -> Self {
        Self { params, lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, step: 0, moments: HashMap::new() }
    }

    /// One update from `grads` (parameters without a gradient are left
    /// alone, as PyTorch skips `grad is None`).
    pub fn step(&mut self, grads: &candle_core::backprop::GradStore) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (bias1, bias2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (name, var) in &self.params {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let (m, v) = match self.moments.get(name) {
                Some((m, v)) => (((m * self.beta1)? + (g * (1.0 - self.beta1))?)?, ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?),
                None => ((g * (1.0 - self.beta1))?, (g.sqr()? * (1.0 - self.beta2))?),
            };
            let decayed = (var.as_tensor() * (1.0 - self.lr * self.weight_decay))?;
            let denom = ((v.sqrt()? / bias2.sqrt())? + self.eps)?;
            let update = ((&m / denom)? * (self.lr / bias1))?;
            var.set(&(decayed - update)?)?;
            self.moments.insert(name.clone(), (m, v));
        }
        Ok(())
    }

    /// The moments as named tensors (`m.<name>`, `v.<name>`).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (name, (m, v)) in &self.moments {
            out.insert(format!("m.{name}"), m.clone());
            out.insert(format!("v.{name}"), v.clone());
        }
        out
    }

    pub fn restore(&mut self, tensors: &HashMap<String, Tensor>, step: u64) {
        self.step = step;
        for (name, _) in &self.params {
            if let (Some(m), Some(v)) = (tensors.get(&format!("m.{name}")), tensors.get(&format!("v.{name}"))) {
                self.moments.insert(name.clone(), (m.clone(), v.clone()));
            }
        }
    }
}

/// `torch.optim.lr_scheduler.ReduceLROnPlateau` (mode `min`, relative
/// threshold 1e-4, no cooldown).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReduceOnPlateau {
    pub factor: f64,
    pub patience: usize,
    pub min_lr: f64,
    pub best: f64,
    pub bad_epochs: usize,
}

impl ReduceOnPlateau {
    pub fn new(factor: f64, patience: usize, min_lr: f64) -> Self {
        Self { factor, patience, min_lr, best: f64::INFINITY, bad_epochs: 0 }
    }

    /// The learning rate after an epoch that ended with `loss`.
    pub fn step(&mut self, loss: f64, lr: f64) -> f64 {
        if loss < self.best * (1.0 - 1e-4) {
            self.best = loss;
            self.bad_epochs = 0;
        } else {
            self.bad_epochs += 1;
        }
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            return (lr * self.factor).max(self.min_lr);
        }
        lr
    }
}

/// Stops a phase after `patience` epochs without a better validation loss.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EarlyStopping {
    pub patience: usize,
    pub best: f64,
    pub waited: usize,
}

impl EarlyStopping {
    pub fn new(patience: usize) -> Self {
        Self { patience, best: f64::INFINITY, waited: 0 }
    }

    /// Whether to stop after an epoch that ended with `loss`.
    pub fn should_stop(&mut self, loss: f64) -> bool {
        if loss < self.best {
            self.best = loss;
            self.waited = 0;
            false
        } else {
            self.waited += 1;
            self.waited >= self.patience
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plateau_waits_then_reduces() {
        let mut s = ReduceOnPlateau::new(0.1, 1, 1e-5);
        assert_eq!(s.step(1.0, 1e-3), 1e-3);
        assert_eq!(s.step(1.0, 1e-3), 1e-3);
        assert!((s.step(1.0, 1e-3) - 1e-4).abs() < 1e-12);
        assert_eq!(s.step(0.5, 1e-4), 1e-4);
    }

    #[test]
    fn early_stopping_counts_epochs_without_improvement() {
        let mut e = EarlyStopping::new(2);
        assert!(!e.should_stop(1.0));
        assert!(!e.should_stop(1.1));
        assert!(e.should_stop(1.0));
    }
}
