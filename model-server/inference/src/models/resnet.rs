//! ResNet-50 with torchvision's parameter names (`conv1`, `bn1`,
//! `layer1.0.conv1`, ..., `layer4.2.bn3`, `layerN.0.downsample.{0,1}`) and
//! the transfer-learning head of the pneumonia and COVID-19 classifiers:
//! global average pooling -> `fc.0` Linear(2048, hidden) -> ReLU -> dropout
//! (identity at inference) -> `fc.3` Linear(hidden, classes), i.e. what
//! `model.fc = nn.Sequential(Linear, ReLU, Dropout, Linear)` saves.
//!
//! candle-transformers has a ResNet-50 with the same names, but it pools
//! inside its forward pass and hands out no feature maps, which Grad-CAM
//! needs; the backbone is small enough to keep here.

use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, ModuleT, VarBuilder, batch_norm, conv2d_no_bias, linear};

use super::fused_cpu::FusedConv;

const BN_EPS: f64 = 1e-5;
const LAYERS: [(usize, usize, usize); 4] = [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)];
const EXPANSION: usize = 4;
/// Channels of the last feature maps.
pub const FEATURES: usize = 512 * EXPANSION;

fn conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, vb: VarBuilder) -> Result<Conv2d> {
    conv2d_no_bias(c_in, c_out, kernel, Conv2dConfig { stride, padding, ..Default::default() }, vb)
}

#[derive(Debug)]
struct Bottleneck {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    conv3: Conv2d,
    bn3: BatchNorm,
    downsample: Option<(Conv2d, BatchNorm)>,
}

impl Bottleneck {
    fn new(c_in: usize, width: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let c_out = width * EXPANSION;
        let downsample = if stride != 1 || c_in != c_out {
            Some((conv(c_in, c_out, 1, stride, 0, vb.pp("downsample.0"))?, batch_norm(c_out, BN_EPS, vb.pp("downsample.1"))?))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(c_in, width, 1, 1, 0, vb.pp("conv1"))?,
            bn1: batch_norm(width, BN_EPS, vb.pp("bn1"))?,
            // torchvision (v1.5) strides the 3x3 convolution.
            conv2: conv(width, width, 3, stride, 1, vb.pp("conv2"))?,
            bn2: batch_norm(width, BN_EPS, vb.pp("bn2"))?,
            conv3: conv(width, c_out, 1, 1, 0, vb.pp("conv3"))?,
            bn3: batch_norm(c_out, BN_EPS, vb.pp("bn3"))?,
            downsample,
        })
    }

    /// `train`: batch norm from batch statistics (running statistics
    /// updated), as PyTorch's `train()` mode.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.bn1.forward_t(&x.apply(&self.conv1)?, train)?.relu()?;
        let y = self.bn2.forward_t(&y.apply(&self.conv2)?, train)?.relu()?;
        let y = self.bn3.forward_t(&y.apply(&self.conv3)?, train)?;
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward_t(&x.apply(conv)?, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

/// A bottleneck for CPU inference: each batch norm folded into its
/// convolution, the shortcut added and ReLU applied in the last
/// convolution's epilogue.
#[derive(Debug)]
struct FusedBottleneck {
    conv1: FusedConv,
    conv2: FusedConv,
    conv3: FusedConv,
    downsample: Option<FusedConv>,
}

impl FusedBottleneck {
    fn new(b: &Bottleneck) -> Result<Self> {
        Ok(Self {
            conv1: FusedConv::new(&b.conv1, Some(&b.bn1), true)?,
            conv2: FusedConv::new(&b.conv2, Some(&b.bn2), true)?,
            conv3: FusedConv::new(&b.conv3, Some(&b.bn3), true)?,
            downsample: b.downsample.as_ref().map(|(conv, bn)| FusedConv::new(conv, Some(bn), false)).transpose()?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let shortcut = match &self.downsample {
            Some(conv) => conv.forward(&x)?,
            None => x.clone(),
        };
        let y = self.conv2.forward(&self.conv1.forward(&x)?)?;
        self.conv3.forward_with_residual(&y, &shortcut)
    }
}

#[derive(Debug)]
struct FusedResNet {
    /// `conv1 -> bn1 -> relu`.
    stem: FusedConv,
    blocks: Vec<FusedBottleneck>,
}

/// The classification head on the pooled features.
#[derive(Debug)]
pub enum Head {
    /// torchvision's own `fc`: Linear(2048, classes).
    Linear(Linear),
    /// `fc = Sequential(Linear(2048, hidden), ReLU, Dropout, Linear(hidden, classes))`.
    Mlp { hidden: Linear, output: Linear },
}

#[derive(Debug)]
pub struct ResNet50 {
    conv1: Conv2d,
    bn1: BatchNorm,
    layers: Vec<Vec<Bottleneck>>,
    head: Head,
    num_classes: usize,
    fused: Option<FusedResNet>,
}

impl ResNet50 {
    /// `hidden`: the transfer-learning head's width, or `None` for
    /// torchvision's single `fc` layer.
    pub fn new(in_channels: usize, num_classes: usize, hidden: Option<usize>, vb: VarBuilder) -> Result<Self> {
        let conv1 = conv(in_channels, 64, 7, 2, 3, vb.pp("conv1"))?;
        let bn1 = batch_norm(64, BN_EPS, vb.pp("bn1"))?;
        let mut c_in = 64;
        let mut layers = Vec::new();
        for (i, &(width, blocks, stride)) in LAYERS.iter().enumerate() {
            let layer_vb = vb.pp(format!("layer{}", i + 1));
            let mut layer = Vec::with_capacity(blocks);
            for b in 0..blocks {
                layer.push(Bottleneck::new(c_in, width, if b == 0 { stride } else { 1 }, layer_vb.pp(b))?);
                c_in = width * EXPANSION;
            }
            layers.push(layer);
        }
        let head = match hidden {
            None => Head::Linear(linear(FEATURES, num_classes, vb.pp("fc"))?),
            Some(hidden) => Head::Mlp { hidden: linear(FEATURES, hidden, vb.pp("fc.0"))?, output: linear(hidden, num_classes, vb.pp("fc.3"))? },
        };
        Ok(Self { conv1, bn1, layers, head, num_classes, fused: None })
    }

    /// From now on, evaluation-mode passes of f32 inputs on the CPU run the
    /// fused layers ([`super::fused_cpu`]), built from the weights as they
    /// are now: for serving, never while training changes them.
    pub fn prepare_for_cpu_inference(&mut self) -> Result<()> {
        let stem = FusedConv::new(&self.conv1, Some(&self.bn1), true)?;
        let blocks = self.layers.iter().flatten().map(FusedBottleneck::new).collect::<Result<Vec<_>>>()?;
        self.fused = Some(FusedResNet { stem, blocks });
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The output of `layer4`: `(batch, 2048, 7, 7)` at 224 x 224.
    pub fn feature_maps(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_units(x, 0..self.units(), false)
    }

    /// The backbone as a sequence of units (the stem, then each bottleneck
    /// block, 17 in all), so training can freeze a prefix and run the rest.
    pub fn units(&self) -> usize {
        1 + self.layers.iter().map(Vec::len).sum::<usize>()
    }

    /// Runs units `range` on `x` (the image for unit 0, else the previous
    /// unit's output).
    pub fn forward_units(&self, x: &Tensor, range: std::ops::Range<usize>, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        if let Some(fused) = self.fused.as_ref().filter(|_| !train && matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32) {
            for unit in range {
                x = if unit == 0 {
                    let y = fused.stem.forward(&x.contiguous()?)?;
                    super::stem_max_pool(&y)?
                } else {
                    fused.blocks.get(unit - 1).ok_or_else(|| candle_core::Error::Msg(format!("no unit {unit}")))?.forward(&x)?
                };
            }
            return Ok(x);
        }
        for unit in range {
            x = if unit == 0 {
                let y = self.bn1.forward_t(&x.apply(&self.conv1)?, train)?.relu()?;
                super::stem_max_pool(&y)?
            } else {
                let block = self.layers.iter().flatten().nth(unit - 1).ok_or_else(|| candle_core::Error::Msg(format!("no unit {unit}")))?;
                block.forward_t(&x, train)?
            };
        }
        Ok(x)
    }

    /// The parameter-name prefixes of a unit (`conv1.`, `layer4.2.`).
    pub fn unit_prefixes(&self, unit: usize) -> Vec<String> {
        if unit == 0 {
            return vec!["conv1.".into(), "bn1.".into()];
        }
        let mut index = unit - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            if index < layer.len() {
                return vec![format!("layer{}.{index}.", l + 1)];
            }
            index -= layer.len();
        }
        Vec::new()
    }

    /// Logits from the feature maps.
    pub fn classify(&self, feature_maps: &Tensor) -> Result<Tensor> {
        self.classify_with_dropout(feature_maps, &|x| Ok(x.clone()))
    }

    /// [`Self::classify`] with `dropout` where the head has it (after the
    /// hidden layer's ReLU; before the single `fc`).
    pub fn classify_with_dropout(&self, feature_maps: &Tensor, dropout: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
        let pooled = feature_maps.mean(D::Minus1)?.mean(D::Minus1)?;
        match &self.head {
            Head::Linear(fc) => dropout(&pooled)?.apply(fc),
            Head::Mlp { hidden, output } => dropout(&pooled.apply(hidden)?.relu()?)?.apply(output),
        }
    }

    /// d logit[label] / d pooled features, `(2048,)`, for one image's
    /// pooled features `(2048,)`: the `fc` row, or through the MLP head
    /// `W1^T (W2[label] * relu'(W1 p + b1))`.
    pub fn score_gradient(&self, pooled: &Tensor, label: usize) -> Result<Tensor> {
        match &self.head {
            Head::Linear(fc) => fc.weight().get(label),
            Head::Mlp { hidden, output } => {
                let z = pooled.unsqueeze(0)?.apply(hidden)?.squeeze(0)?;
                let active = z.gt(0f32)?.to_dtype(z.dtype())?;
                let upstream = (output.weight().get(label)? * active)?;
                upstream.unsqueeze(0)?.matmul(hidden.weight())?.squeeze(0)
            }
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.classify(&self.feature_maps(x)?)
    }
}
