//! DenseNet-121 exactly as torchvision builds it, with TorchXRayVision's
//! changes: a 1-channel stem, an 18-output classifier, and the forward pass
//! `features -> ReLU -> global average pool -> classifier`. Parameter names
//! are torchvision's (`features.denseblock1.denselayer1.norm1.weight`, ...),
//! so TorchXRayVision's `densenet121-res224-all` state dict loads as is once
//! converted to safetensors.
//!
//! candle has no DenseNet; this is built from candle-nn parts.

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, ModuleT, VarBuilder, batch_norm, conv2d_no_bias, linear};

use super::fused_cpu::{ChannelAffine, FusedConv};

/// DenseNet-121: growth rate 32, blocks of 6, 12, 24, 16 layers, 64 initial
/// features, bottleneck width 4 x growth.
const GROWTH: usize = 32;
const BLOCKS: [usize; 4] = [6, 12, 24, 16];
const INITIAL_FEATURES: usize = 64;
const BOTTLENECK: usize = 4 * GROWTH;
const BN_EPS: f64 = 1e-5;

#[derive(Debug)]
struct DenseLayer {
    norm1: BatchNorm,
    conv1: Conv2d,
    norm2: BatchNorm,
    conv2: Conv2d,
}

impl DenseLayer {
    fn new(in_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm1: batch_norm(in_channels, BN_EPS, vb.pp("norm1"))?,
            conv1: conv2d_no_bias(in_channels, BOTTLENECK, 1, Conv2dConfig::default(), vb.pp("conv1"))?,
            norm2: batch_norm(BOTTLENECK, BN_EPS, vb.pp("norm2"))?,
            conv2: conv2d_no_bias(BOTTLENECK, GROWTH, 3, Conv2dConfig { padding: 1, ..Default::default() }, vb.pp("conv2"))?,
        })
    }

    /// The layer's new features (the caller concatenates them).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.norm1.forward_t(x, train)?.relu()?.apply(&self.conv1)?;
        self.norm2.forward_t(&x, train)?.relu()?.apply(&self.conv2)
    }
}

#[derive(Debug)]
struct Transition {
    norm: BatchNorm,
    conv: Conv2d,
}

impl Transition {
    fn new(in_channels: usize, out_channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: batch_norm(in_channels, BN_EPS, vb.pp("norm"))?,
            conv: conv2d_no_bias(in_channels, out_channels, 1, Conv2dConfig::default(), vb.pp("conv"))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.norm.forward_t(x, train)?.relu()?.apply(&self.conv)?.avg_pool2d(2)
    }
}

/// The same network for CPU inference: batch norms folded into the
/// convolution before them, or (the pre-activations) applied with their
/// ReLU by the 1x1 convolution after them as it reads its input; each dense
/// block's features written into one buffer.
#[derive(Debug)]
struct FusedDenseNet {
    /// `conv0 -> norm0 -> relu`.
    stem: FusedConv,
    /// Per layer: `norm1 -> relu -> conv1 -> norm2 -> relu`, `conv2`.
    blocks: Vec<Vec<(FusedConv, FusedConv)>>,
    /// `norm -> relu -> conv` (then the average pool).
    transitions: Vec<FusedConv>,
    norm5: ChannelAffine,
}

impl FusedDenseNet {
    fn new(net: &DenseNet121) -> Result<Self> {
        Ok(Self {
            stem: FusedConv::new(&net.conv0, Some(&net.norm0), true)?,
            blocks: net
                .blocks
                .iter()
                .map(|block| {
                    block
                        .iter()
                        .map(|l| {
                            Ok((
                                FusedConv::new(&l.conv1, Some(&l.norm2), true)?.with_pre_activation(ChannelAffine::from_batch_norm(&l.norm1, true)?)?,
                                FusedConv::new(&l.conv2, None, false)?,
                            ))
                        })
                        .collect::<Result<Vec<_>>>()
                })
                .collect::<Result<Vec<_>>>()?,
            transitions: net
                .transitions
                .iter()
                .map(|t| FusedConv::new(&t.conv, None, false)?.with_pre_activation(ChannelAffine::from_batch_norm(&t.norm, true)?))
                .collect::<Result<Vec<_>>>()?,
            norm5: ChannelAffine::from_batch_norm(&net.norm5, true)?,
        })
    }

    fn forward_unit(&self, x: &Tensor, unit: usize, last: usize) -> Result<Tensor> {
        if unit == 0 {
            let y = self.stem.forward(&x.contiguous()?)?;
            super::stem_max_pool(&y)
        } else if unit == last {
            self.norm5.forward(x)
        } else if unit % 2 == 1 {
            let block = &self.blocks[(unit - 1) / 2];
            let (b, c0, h, w) = x.dims4()?;
            // Each layer reads a prefix of the channels and appends 32:
            // one buffer instead of a concatenation per layer.
            let features = Tensor::zeros((b, c0 + block.len() * GROWTH, h, w), DType::F32, x.device())?;
            features.slice_set(&x.contiguous()?, 1, 0)?;
            let mut channels = c0;
            for (conv1, conv2) in block {
                conv2.forward_into(&conv1.forward(&features.narrow(1, 0, channels)?)?, &features, channels)?;
                channels += GROWTH;
            }
            Ok(features)
        } else {
            self.transitions[unit / 2 - 1].forward(x)?.avg_pool2d(2)
        }
    }
}

#[derive(Debug)]
pub struct DenseNet121 {
    conv0: Conv2d,
    norm0: BatchNorm,
    blocks: Vec<Vec<DenseLayer>>,
    transitions: Vec<Transition>,
    norm5: BatchNorm,
    classifier: Linear,
    num_classes: usize,
    fused: Option<FusedDenseNet>,
}

impl DenseNet121 {
    /// Loads the weights under `vb` (the root of a torchvision-style state
    /// dict); `in_channels` is 1 for TorchXRayVision, 3 for torchvision.
    pub fn new(in_channels: usize, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        let features = vb.pp("features");
        let conv0 = conv2d_no_bias(in_channels, INITIAL_FEATURES, 7, Conv2dConfig { stride: 2, padding: 3, ..Default::default() }, features.pp("conv0"))?;
        let norm0 = batch_norm(INITIAL_FEATURES, BN_EPS, features.pp("norm0"))?;
        let mut channels = INITIAL_FEATURES;
        let mut blocks = Vec::new();
        let mut transitions = Vec::new();
        for (b, &layers) in BLOCKS.iter().enumerate() {
            let block_vb = features.pp(format!("denseblock{}", b + 1));
            let mut block = Vec::with_capacity(layers);
            for l in 0..layers {
                block.push(DenseLayer::new(channels + l * GROWTH, block_vb.pp(format!("denselayer{}", l + 1)))?);
            }
            blocks.push(block);
            channels += layers * GROWTH;
            if b + 1 < BLOCKS.len() {
                transitions.push(Transition::new(channels, channels / 2, features.pp(format!("transition{}", b + 1)))?);
                channels /= 2;
            }
        }
        let norm5 = batch_norm(channels, BN_EPS, features.pp("norm5"))?;
        let classifier = linear(channels, num_classes, vb.pp("classifier"))?;
        Ok(Self { conv0, norm0, blocks, transitions, norm5, classifier, num_classes, fused: None })
    }

    /// From now on, evaluation-mode passes of f32 inputs on the CPU run the
    /// fused layers ([`super::fused_cpu`]), built from the weights as they
    /// are now: for serving, never while training changes them.
    pub fn prepare_for_cpu_inference(&mut self) -> Result<()> {
        self.fused = Some(FusedDenseNet::new(self)?);
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The last feature maps, after `norm5` and the final ReLU:
    /// `(batch, 1024, 7, 7)` at 224 x 224. Grad-CAM weighs these.
    pub fn feature_maps(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_units(x, 0..self.units(), false)
    }

    /// The network as a sequence of units, so training can freeze a prefix
    /// and run the rest: the stem, then each dense block and transition
    /// (`denseblock1`, `transition1`, ..., `denseblock4`), then `norm5`
    /// with its ReLU; 9 in all.
    pub fn units(&self) -> usize {
        1 + self.blocks.len() + self.transitions.len() + 1
    }

    /// Runs units `range` on `x` (the image for unit 0, else the previous
    /// unit's output).
    pub fn forward_units(&self, x: &Tensor, range: std::ops::Range<usize>, train: bool) -> Result<Tensor> {
        let last = self.units() - 1;
        let mut x = x.clone();
        if let Some(fused) = self.fused.as_ref().filter(|_| !train && matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32) {
            for unit in range {
                x = fused.forward_unit(&x, unit, last)?;
            }
            return Ok(x);
        }
        for unit in range {
            x = if unit == 0 {
                let y = self.norm0.forward_t(&x.apply(&self.conv0)?, train)?.relu()?;
                super::stem_max_pool(&y)?
            } else if unit == last {
                self.norm5.forward_t(&x, train)?.relu()?
            } else if unit % 2 == 1 {
                let block = &self.blocks[(unit - 1) / 2];
                // Concatenating once per layer is what torchvision does too;
                // the copies are small next to the convolutions.
                let mut features = vec![x];
                for layer in block {
                    let input = Tensor::cat(&features, 1)?;
                    features.push(layer.forward_t(&input, train)?);
                }
                Tensor::cat(&features, 1)?
            } else {
                self.transitions[unit / 2 - 1].forward_t(&x, train)?
            };
        }
        Ok(x)
    }

    /// The parameter-name prefixes of a unit (`features.denseblock4.`).
    pub fn unit_prefixes(&self, unit: usize) -> Vec<String> {
        let last = self.units() - 1;
        match unit {
            0 => vec!["features.conv0.".into(), "features.norm0.".into()],
            u if u == last => vec!["features.norm5.".into()],
            u if u % 2 == 1 => vec![format!("features.denseblock{}.", u.div_ceil(2))],
            u => vec![format!("features.transition{}.", u / 2)],
        }
    }

    /// Logits for each class from the feature maps.
    pub fn classify(&self, feature_maps: &Tensor) -> Result<Tensor> {
        self.classify_with_dropout(feature_maps, &|x| Ok(x.clone()))
    }

    /// [`Self::classify`] with `dropout` on the pooled features (training).
    pub fn classify_with_dropout(&self, feature_maps: &Tensor, dropout: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        dropout(&feature_maps.mean(D::Minus1)?.mean(D::Minus1)?)?.apply(&self.classifier)
    }

    /// d logit[label] / d pooled features: the classifier's row (`(1024,)`).
    pub fn score_gradient(&self, _pooled: &Tensor, label: usize) -> Result<Tensor> {
        self.classifier.weight().get(label)
    }

    /// Logits, `(batch, num_classes)`, for preprocessed `(batch, C, H, W)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.classify(&self.feature_maps(x)?)
    }
}
