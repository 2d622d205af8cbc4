//! Evaluation: per-label ROC-AUC, the operating threshold chosen on
//! validation, accuracy / precision / recall / F1 at it, confusion
//! matrices and calibration (reliability bins, expected calibration error,
//! Brier score).

use serde::Serialize;

/// How the operating threshold of each label is chosen (written into the
/// manifest's provenance).
pub const THRESHOLD_RULE: &str = "per label, on the validation split: the probability that maximises Youden's J \
     (sensitivity + specificity - 1); ties go to the higher threshold; 0.5 when the validation split lacks a positive or a negative";

/// ROC-AUC by the rank statistic (ties count one half); `None` without
/// both classes.
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (n_pos, n_neg) = (positive.iter().filter(|&&p| p).count(), positive.iter().filter(|&&p| !p).count());
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Average ranks over ties, then Mann-Whitney U.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            if positive[k] {
                rank_sum += rank;
            }
        }
        i = j + 1;
    }
    Some((rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// Points of the ROC curve `(false positive rate, true positive rate)`,
/// from the highest threshold down.
pub fn roc_curve(scores: &[f32], positive: &[bool]) -> Vec<(f64, f64)> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let n_pos = positive.iter().filter(|&&p| p).count().max(1) as f64;
    let n_neg = positive.iter().filter(|&&p| !p).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut points = vec![(0.0, 0.0)];
    for (idx, &k) in order.iter().enumerate() {
        if positive[k] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if idx + 1 == order.len() || scores[order[idx + 1]] != scores[k] {
            points.push((fp / n_neg, tp / n_pos));
        }
    }
    points
}

/// [`THRESHOLD_RULE`].
pub fn youden_threshold(scores: &[f32], positive: &[bool]) -> f32 {
    if !positive.iter().any(|&p| p) || positive.iter().all(|&p| p) {
        return 0.5;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    let mut candidates: Vec<f32> = scores.to_vec();
    candidates.sort_by(|a, b| b.total_cmp(a));
    candidates.dedup();
    let (mut best, mut best_j) = (0.5, f64::MIN);
    for &t in &candidates {
        let tp = scores.iter().zip(positive).filter(|&(&s, &p)| p && s >= t).count() as f64;
        let tn = scores.iter().zip(positive).filter(|&(&s, &p)| !p && s < t).count() as f64;
        let j = tp / n_pos + tn / n_neg - 1.0;
        if j > best_j + 1e-12 {
            best_j = j;
            best = t;
        }
    }
    best
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Binary {
    pub threshold: f32,
    pub auc: Option<f64>,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub specificity: f64,
    pub f1: f64,
    /// `[[tn, fp], [fn, tp]]`.
    pub confusion: [[usize; 2]; 2],
    pub positives: usize,
    pub negatives: usize,
}

pub fn binary(scores: &[f32], positive: &[bool], threshold: f32) -> Binary {
    let mut c = [[0usize; 2]; 2];
    for (&s, &p) in scores.iter().zip(positive) {
        c[usize::from(p)][usize::from(s >= threshold)] += 1;
    }
    let (tn, fp, fn_, tp) = (c[0][0] as f64, c[0][1] as f64, c[1][0] as f64, c[1][1] as f64);
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, tp + fn_);
    Binary {
        threshold,
        auc: roc_auc(scores, positive),
        accuracy: ratio(tp + tn, tp + tn + fp + fn_),
        precision,
        recall,
        specificity: ratio(tn, tn + fp),
        f1: ratio(2.0 * precision * recall, precision + recall),
        confusion: c,
        positives: (tp + fn_) as usize,
        negatives: (tn + fp) as usize,
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Calibration {
    /// Ten equal-width bins: `(mean predicted, observed rate, count)`.
    pub bins: Vec<(f64, f64, usize)>,
    /// Expected calibration error: the count-weighted mean gap.
    pub ece: f64,
    pub brier: f64,
}

pub fn calibration(scores: &[f32], positive: &[bool]) -> Calibration {
    let mut sums = [(0.0f64, 0.0f64, 0usize); 10];
    for (&s, &p) in scores.iter().zip(positive) {
        let b = ((s as f64 * 10.0) as usize).min(9);
        sums[b].0 += s as f64;
        sums[b].1 += f64::from(u8::from(p));
        sums[b].2 += 1;
    }
    let n = scores.len().max(1) as f64;
    let bins: Vec<(f64, f64, usize)> = sums.iter().map(|&(s, o, c)| if c > 0 { (s / c as f64, o / c as f64, c) } else { (0.0, 0.0, 0) }).collect();
    let ece = bins.iter().map(|&(m, o, c)| (m - o).abs() * c as f64 / n).sum();
    let brier = scores.iter().zip(positive).map(|(&s, &p)| (s as f64 - f64::from(u8::from(p))).powi(2)).sum::<f64>() / n;
    Calibration { bins, ece, brier }
}

/// `k x k` confusion matrix of exclusive classes: rows true, columns
/// predicted (the highest probability).
pub fn confusion_matrix(probabilities: &[Vec<f32>], truth: &[usize], k: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; k]; k];
    for (p, &t) in probabilities.iter().zip(truth) {
        let predicted = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        m[t][predicted] += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_a_perfect_a_reversed_and_a_tied_ranking() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), Some(0.0));
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &[false, true, false, true]), Some(0.5));
        assert_eq!(roc_auc(&[0.5], &[true]), None);
        // sklearn.metrics.roc_auc_score([0,0,1,1,0,1],[.1,.4,.35,.8,.7,.9]) = 0.7777...
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8, 0.7, 0.9], &[false, false, true, true, false, true]).unwrap_or_default();
        assert!((auc - 7.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn youden_picks_the_separating_threshold() {
        assert_eq!(youden_threshold(&[0.1, 0.2, 0.6, 0.7], &[false, false, true, true]), 0.6);
        let b = binary(&[0.1, 0.2, 0.6, 0.7], &[false, true, true, true], 0.6);
        assert_eq!(b.confusion, [[1, 0], [1, 2]]);
        assert!((b.recall - 2.0 / 3.0).abs() < 1e-12 && b.precision == 1.0);
    }

    #[test]
    fn calibration_of_a_calibrated_predictor_is_zero() {
        let c = calibration(&[0.25, 0.25, 0.25, 0.25], &[true, false, false, false]);
        assert!(c.ece < 1e-9, "{c:?}");
    }
}
