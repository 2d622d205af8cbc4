//! Inference-only CPU layers (f32): batch norm folded at load into the
//! convolution before it (or into a per-channel scale and shift), ReLU and
//! the residual addition applied in the convolution's epilogue, and
//! convolutions written as one GEMM per image straight into NCHW.
//!
//! Why our own: candle 0.11's CPU convolution converts every input to NHWC
//! and back on one thread, re-packs the kernel on every call and splits the
//! GEMM into 512-pixel tiles; its batch norm is four broadcast passes and
//! ReLU a fifth, all single-threaded. Profiles of DenseNet-121 and ResNet-50
//! spent most of their time there rather than in the GEMM (numbers in
//! model-server/README.md). The GEMM itself is the `gemm` crate candle uses.
//!
//! These ops have no backward pass: training keeps candle-nn's layers, and
//! the networks build these only on request
//! ([`super::DenseNet121::prepare_for_cpu_inference`]), from weights that no
//! longer change.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, InplaceOp2, Layout, Result, Shape, Tensor};
use candle_nn::{BatchNorm, Conv2d};
use rayon::prelude::*;

/// Per-channel `scale` and `shift` of a batch norm in evaluation mode:
/// `y = x * scale + shift`.
fn folded(bn: &BatchNorm) -> Result<(Vec<f32>, Vec<f32>)> {
    let mean: Vec<f32> = bn.running_mean().to_dtype(DType::F32)?.to_vec1()?;
    let var: Vec<f32> = bn.running_var().to_dtype(DType::F32)?.to_vec1()?;
    let (weight, bias): (Vec<f32>, Vec<f32>) = match bn.weight_and_bias() {
        Some((w, b)) => (w.to_dtype(DType::F32)?.to_vec1()?, b.to_dtype(DType::F32)?.to_vec1()?),
        None => (vec![1.0; mean.len()], vec![0.0; mean.len()]),
    };
    let eps = bn.eps() as f32;
    let scale: Vec<f32> = weight.iter().zip(&var).map(|(w, v)| w / (v + eps).sqrt()).collect();
    let shift = bias.iter().zip(&mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
    Ok((scale, shift))
}

fn f32_input<'a>(storage: &'a CpuStorage, op: &str) -> Result<&'a [f32]> {
    match storage {
        CpuStorage::F32(values) => Ok(values),
        _ => candle_core::bail!("{op}: f32 only"),
    }
}

/// A batch norm in evaluation mode, optionally followed by ReLU, in one
/// pass over the input (DenseNet's pre-activation `norm -> relu`).
#[derive(Clone, Debug)]
pub struct ChannelAffine {
    scale: Vec<f32>,
    shift: Vec<f32>,
    relu: bool,
}

impl ChannelAffine {
    pub fn from_batch_norm(bn: &BatchNorm, relu: bool) -> Result<Self> {
        let (scale, shift) = folded(bn)?;
        Ok(Self { scale, shift, relu })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// `src * scale + shift` of channel `ch`, then ReLU if asked, into
    /// `dst` through `write` (plain values or not yet initialised ones).
    fn apply_plane<T>(&self, ch: usize, src: &[f32], dst: &mut [T], write: impl Fn(&mut T, f32)) {
        let (s, t) = (self.scale[ch], self.shift[ch]);
        if self.relu {
            dst.iter_mut().zip(src).for_each(|(d, &x)| write(d, (x * s + t).max(0.0)));
        } else {
            dst.iter_mut().zip(src).for_each(|(d, &x)| write(d, x * s + t));
        }
    }
}

impl CustomOp1 for ChannelAffine {
    fn name(&self) -> &'static str {
        "channel-affine"
    }

    /// Takes `(batch, channels, h, w)` with each `h x w` plane contiguous
    /// and any batch and channel strides (a channel prefix of DenseNet's
    /// block buffer); writes a contiguous result.
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let input = f32_input(storage, self.name())?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let stride = layout.stride();
        if c != self.scale.len() || (h > 1 && stride[2] != w) || (w > 1 && stride[3] != 1) {
            candle_core::bail!("channel-affine: {:?} with strides {stride:?} for {} channels", layout.shape(), self.scale.len());
        }
        let plane = h * w;
        let start = layout.start_offset();
        // Written once, without zero-filling first.
        let mut out: Vec<f32> = Vec::with_capacity(b * c * plane);
        out.spare_capacity_mut()[..b * c * plane].par_chunks_mut(plane).enumerate().for_each(|(i, dst)| {
            let (n, ch) = (i / c, i % c);
            let src = &input[start + n * stride[0] + ch * stride[1]..][..plane];
            self.apply_plane(ch, src, dst, |d, v| _ = d.write(v));
        });
        // SAFETY: every value was written above.
        unsafe { out.set_len(b * c * plane) };
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// A convolution (no dilation, no groups) with a folded batch norm as its
/// bias, and ReLU (after an optional residual addition) in its epilogue.
#[derive(Clone, Debug)]
pub struct FusedConv {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    /// `(c_out, c_in * kernel * kernel)`, PyTorch's order, rows scaled by
    /// the batch norm's scale.
    weights: Vec<f32>,
    bias: Vec<f32>,
    relu: bool,
    /// DenseNet's pre-activation `relu(norm(x))`, applied on the way in.
    pre: Option<ChannelAffine>,
}

impl FusedConv {
    /// `conv`, then `bn` (evaluation mode) if given, then ReLU if `relu`.
    pub fn new(conv: &Conv2d, bn: Option<&BatchNorm>, relu: bool) -> Result<Self> {
        let weight = conv.weight().to_dtype(DType::F32)?;
        let (c_out, c_in, kh, kw) = weight.dims4()?;
        if kh != kw {
            candle_core::bail!("fused conv: square kernels only, got {kh}x{kw}");
        }
        let config = conv.config();
        if config.dilation != 1 || config.groups != 1 {
            candle_core::bail!("fused conv: no dilation or groups");
        }
        let mut weights: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        let mut bias = match conv.bias() {
            Some(b) => b.to_dtype(DType::F32)?.to_vec1()?,
            None => vec![0.0; c_out],
        };
        if let Some(bn) = bn {
            let (scale, shift) = folded(bn)?;
            let row = c_in * kh * kw;
            for (o, (s, t)) in scale.iter().zip(&shift).enumerate() {
                weights[o * row..(o + 1) * row].iter_mut().for_each(|w| *w *= s);
                bias[o] = bias[o] * s + t;
            }
        }
        Ok(Self { c_in, c_out, kernel: kh, stride: config.stride, padding: config.padding, weights, bias, relu, pre: None })
    }

    /// Applies `pre` (a batch norm with ReLU: DenseNet's `norm -> relu`
    /// before each 1x1 convolution) to the input first. Each thread applies
    /// it to just the columns it multiplies, into a buffer of its own, so the
    /// normalised input is never written out whole and there is no separate
    /// pass (and hand-off) for it. 1x1 stride-1 convolutions only.
    pub fn with_pre_activation(mut self, pre: ChannelAffine) -> Result<Self> {
        if self.kernel != 1 || self.stride != 1 || self.padding != 0 || pre.scale.len() != self.c_in {
            candle_core::bail!("fused conv: pre-activation for 1x1 stride-1 convolutions of {} channels only", self.c_in);
        }
        self.pre = Some(pre);
        Ok(self)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1_no_bwd(self)
    }

    /// Writes `conv(x)` into channels `channel..channel + c_out` of `dst`
    /// (contiguous, `(batch, channels, oh, ow)`) in place: a DenseNet layer
    /// appending its features to its block's buffer without a copy.
    pub fn forward_into(&self, x: &Tensor, dst: &Tensor, channel: usize) -> Result<()> {
        dst.inplace_op2(x, &WriteInto { conv: self, channel })
    }

    /// `relu(conv(x) + residual)` (ResNet's last convolution of a block).
    pub fn forward_with_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        x.apply_op2_no_bwd(residual, &WithResidual(self))
    }

    fn out_side(&self, side: usize) -> usize {
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn run(&self, input: &[f32], layout: &Layout, residual: Option<&[f32]>) -> Result<(CpuStorage, Shape)> {
        let (b, _, h, w) = layout.shape().dims4()?;
        let (oh, ow) = (self.out_side(h), self.out_side(w));
        let per_image = self.c_out * oh * ow;
        let mut out: Vec<f32> = Vec::with_capacity(b * per_image);
        // SAFETY: `out` holds `b` images of `per_image` values.
        unsafe { self.run_into(input, layout, residual, SharedOut(out.as_mut_ptr()), per_image)? };
        // SAFETY: every image's every output was written.
        unsafe { out.set_len(b * per_image) };
        Ok((CpuStorage::F32(out), Shape::from((b, self.c_out, oh, ow))))
    }

    /// Writes image `n`'s `c_out x oh x ow` output at `out + n * image_stride`.
    ///
    /// # Safety
    /// Those places must be writable and touched by no one else meanwhile.
    unsafe fn run_into(&self, input: &[f32], layout: &Layout, residual: Option<&[f32]>, out_ptr: SharedOut, image_stride: usize) -> Result<()> {
        let (b, c, h, w) = layout.shape().dims4()?;
        // Each image's channels must be packed planes; images may lie apart
        // (a channel prefix of DenseNet's block buffer).
        let stride = layout.stride();
        if (h > 1 && stride[2] != w) || (w > 1 && stride[3] != 1) || (c > 1 && stride[1] != h * w) {
            candle_core::bail!("fused conv: {:?} with strides {stride:?}: packed channel planes only", layout.shape());
        }
        if c != self.c_in {
            candle_core::bail!("fused conv: {c} input channels, expected {}", self.c_in);
        }
        let start = layout.start_offset();
        let (oh, ow) = (self.out_side(h), self.out_side(w));
        let pixels = oh * ow;
        let k = self.c_in * self.kernel * self.kernel;
        let direct = self.kernel == 1 && self.stride == 1 && self.padding == 0;
        let per_image = self.c_out * pixels;
        // The pool these par_iters run in (the global one, sized by
        // RAYON_NUM_THREADS like candle's, unless the caller installed one).
        let threads = rayon::current_num_threads();
        // A batch with an image per thread runs its images side by side, each
        // GEMM on one thread (small per-layer GEMMs split badly). Otherwise
        // each image's output is cut into one block per thread, above about
        // a million multiply-adds (below, threads cost more than they save):
        // each block's epilogue then runs on the thread that just wrote it,
        // with one hand-off per layer instead of one per GEMM phase.
        let by_image = threads > 1 && b >= threads;
        let blocks = if threads > 1 && !by_image && per_image * k > 1 << 20 { threads } else { 1 };
        let one_image = |n: usize, columns: &mut Vec<f32>| {
            let image = &input[start + n * stride[0]..][..c * h * w];
            let residual = residual.map(|r| &r[n * per_image..(n + 1) * per_image]);
            // SAFETY: image `n`'s `c_out x pixels` output lies inside the
            // output (the caller's contract), and the blocks below cover it
            // without overlapping.
            let dst = SharedOut(unsafe { out_ptr.at(n * image_stride) });
            let by_rows = self.c_out >= pixels;
            if self.pre.is_some() || (!direct && blocks > 1 && !by_rows) {
                // Cut along the columns, each thread building its own
                // block's input (the pre-activation, or just its patches):
                // no separate pass (and hand-off) before the GEMMs.
                for_each_block(pixels, blocks, |cols| {
                    with_block_input(k * cols.len(), |rhs| {
                        match &self.pre {
                            Some(pre) => fill_pre_activated(pre, image, pixels, cols.clone(), rhs),
                            None => self.im2col_range(image, h, w, ow, cols.clone(), rhs),
                        }
                        // SAFETY: as above; `rhs` is `k x cols.len()`.
                        unsafe { self.block(dst, rhs.as_ptr(), cols.len(), residual, k, pixels, 0..self.c_out, cols) }
                    })
                });
                return;
            }
            let rhs: &[f32] = if direct {
                image
            } else {
                // im2col writes every value: grow (zeroing only the growth)
                // but never clear.
                if columns.len() < k * pixels {
                    columns.resize(k * pixels, 0.0);
                }
                let columns = &mut columns[..k * pixels];
                self.im2col(image, h, w, (oh, ow), columns, !by_image);
                columns
            };
            // Cut along the longer side, so that what each thread packs
            // twice (the other operand) is the smaller one.
            for_each_block(if by_rows { self.c_out } else { pixels }, blocks, |part| {
                let (rows, cols) = if by_rows { (part, 0..pixels) } else { (0..self.c_out, part) };
                // SAFETY: as above; blocks differ in rows or in columns.
                unsafe { self.block(dst, rhs[cols.start..].as_ptr(), pixels, residual, k, pixels, rows, cols) };
            });
        };
        if by_image {
            (0..b).into_par_iter().for_each(|n| with_columns(|columns| one_image(n, columns)));
        } else {
            with_columns(|columns| (0..b).for_each(|n| one_image(n, columns)));
        }
        Ok(())
    }

    /// One block of one image's output, `dst[rows, cols]` (row-major,
    /// `pixels` per row): the epilogue's addends (bias, residual) first, the
    /// GEMM accumulating onto them, then ReLU. `rhs` points at the block's
    /// first column of a `k`-row matrix with rows `rhs_stride` apart.
    ///
    /// # Safety
    /// `dst` must point at `c_out x pixels` writable values, `rhs` at `k`
    /// readable rows of `cols.len()` values, and no other thread touch
    /// `dst[rows, cols]` meanwhile.
    #[allow(clippy::too_many_arguments)]
    unsafe fn block(
        &self,
        dst: SharedOut,
        rhs: *const f32,
        rhs_stride: usize,
        residual: Option<&[f32]>,
        k: usize,
        pixels: usize,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
    ) {
        let dst = dst.0;
        // SAFETY: the caller's contract; the GEMM's operands are in bounds.
        unsafe {
            for o in rows.clone() {
                let row = dst.add(o * pixels);
                let bias = self.bias[o];
                for j in cols.clone() {
                    let v = bias + residual.map_or(0.0, |r| r[o * pixels + j]);
                    row.add(j).write(v);
                }
            }
            gemm::gemm(
                rows.len(),
                cols.len(),
                k,
                dst.add(rows.start * pixels + cols.start),
                1,
                pixels as isize,
                true,
                self.weights.as_ptr().add(rows.start * k),
                1,
                k as isize,
                rhs,
                1,
                rhs_stride as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
            if self.relu {
                for o in rows {
                    let row = std::slice::from_raw_parts_mut(dst.add(o * pixels + cols.start), cols.len());
                    row.iter_mut().for_each(|v| *v = v.max(0.0));
                }
            }
        }
    }

    /// One image's patches as `(c_in * kernel * kernel, oh * ow)`, rows in
    /// the weights' order, zeros where the window leaves the image.
    fn im2col(&self, image: &[f32], h: usize, w: usize, (oh, ow): (usize, usize), columns: &mut [f32], parallel: bool) {
        let kk = self.kernel * self.kernel;
        let pixels = oh * ow;
        let channel = |(ch, rows): (usize, &mut [f32])| {
            let plane = &image[ch * h * w..(ch + 1) * h * w];
            for (tap, row) in rows.chunks_mut(pixels).enumerate() {
                for (oy, dst) in row.chunks_mut(ow).enumerate() {
                    self.patch_segment(plane, (h, w), tap, oy, 0..ow, dst);
                }
            }
        };
        if parallel {
            columns.par_chunks_mut(kk * pixels).enumerate().for_each(channel);
        } else {
            columns.chunks_mut(kk * pixels).enumerate().for_each(channel);
        }
    }

    /// The columns `pixels` (flattened output positions) of one image's
    /// patches, as `(c_in * kernel * kernel, pixels.len())`: what one
    /// thread's block of a convolution multiplies.
    fn im2col_range(&self, image: &[f32], h: usize, w: usize, ow: usize, pixels: std::ops::Range<usize>, columns: &mut [f32]) {
        let width = pixels.len();
        for (r, row) in columns.chunks_mut(width).enumerate() {
            let (ch, tap) = (r / (self.kernel * self.kernel), r % (self.kernel * self.kernel));
            let plane = &image[ch * h * w..(ch + 1) * h * w];
            for oy in pixels.start / ow..pixels.end.div_ceil(ow) {
                let xs = pixels.start.max(oy * ow) - oy * ow..pixels.end.min((oy + 1) * ow) - oy * ow;
                let at = oy * ow + xs.start - pixels.start;
                self.patch_segment(plane, (h, w), tap, oy, xs.clone(), &mut row[at..at + xs.len()]);
            }
        }
    }

    /// The input values kernel tap `tap` (`ky * kernel + kx`) of one
    /// channel `plane` contributes to output row `oy`, columns `xs`; zeros
    /// where the window leaves the image.
    fn patch_segment(&self, plane: &[f32], (h, w): (usize, usize), tap: usize, oy: usize, xs: std::ops::Range<usize>, dst: &mut [f32]) {
        let (ky, kx) = (tap / self.kernel, tap % self.kernel);
        let (stride, padding) = (self.stride, self.padding as isize);
        let iy = (oy * stride + ky) as isize - padding;
        if iy < 0 || iy >= h as isize {
            dst.fill(0.0);
            return;
        }
        let src = &plane[iy as usize * w..(iy as usize + 1) * w];
        if stride == 1 {
            // ix = ox + kx - padding: one shifted copy, zeros at the edges.
            let shift = kx as isize - padding;
            let first = (xs.start as isize).max(-shift) as usize;
            let last = ((w as isize - shift).min(xs.end as isize)).max(first as isize) as usize;
            let (first, last) = (first.min(xs.end), last.min(xs.end));
            dst[..first - xs.start].fill(0.0);
            dst[first - xs.start..last - xs.start].copy_from_slice(&src[(first as isize + shift) as usize..(last as isize + shift) as usize]);
            dst[last - xs.start..].fill(0.0);
        } else {
            for (ox, d) in xs.zip(dst.iter_mut()) {
                let ix = (ox * stride + kx) as isize - padding;
                *d = if ix < 0 || ix >= w as isize { 0.0 } else { src[ix as usize] };
            }
        }
    }
}

impl CustomOp1 for FusedConv {
    fn name(&self) -> &'static str {
        "fused-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        self.run(f32_input(storage, self.name())?, layout, None)
    }
}

thread_local! {
    /// Each thread's im2col buffer, kept from layer to layer and image to
    /// image: a fresh one per call cost an allocation, page faults and a
    /// zero-fill of up to 14 MB (DenseNet's first 3x3 convolutions).
    static COLUMNS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's im2col buffer. Taken out and put back rather
/// than borrowed: a thread waiting in rayon may run another convolution,
/// which then simply gets a fresh buffer.
fn with_columns<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut columns = COLUMNS.take();
    let result = f(&mut columns);
    COLUMNS.set(columns);
    result
}

thread_local! {
    /// Each thread's input columns for its own block (pre-activated, see
    /// [`FusedConv::with_pre_activation`], or gathered patches), kept like
    /// [`COLUMNS`].
    static BLOCK_INPUT: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `f` on this thread's block-input buffer, `len` values long, whose
/// contents `f` writes first.
fn with_block_input<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buffer = BLOCK_INPUT.take();
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    let result = f(&mut buffer[..len]);
    BLOCK_INPUT.set(buffer);
    result
}

/// `pre(image)[.., cols]` as a `channels x cols.len()` matrix in `buffer`.
fn fill_pre_activated(pre: &ChannelAffine, image: &[f32], pixels: usize, cols: std::ops::Range<usize>, buffer: &mut [f32]) {
    let width = cols.len();
    for (ch, dst) in buffer.chunks_mut(width).enumerate() {
        pre.apply_plane(ch, &image[ch * pixels + cols.start..][..width], dst, |d, v| *d = v);
    }
}

/// Runs `f` in parallel on `0..len` cut into at most `blocks` ranges, each
/// a multiple of 16 long but the last (whole micro-kernel panels for the
/// GEMM); one range, run in place, when `blocks` is 1.
fn for_each_block(len: usize, blocks: usize, f: impl Fn(std::ops::Range<usize>) + Send + Sync) {
    let step = len.div_ceil(blocks).next_multiple_of(16).max(16);
    (0..len.div_ceil(step)).into_par_iter().for_each(|i| f(i * step..((i + 1) * step).min(len)));
}

/// The output buffer, written by several threads at disjoint places.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: the writers are handed disjoint blocks (see `FusedConv::run`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `offset` must lie within the buffer's allocation.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: the caller keeps `offset` in bounds.
        unsafe { self.0.add(offset) }
    }
}

struct WriteInto<'a> {
    conv: &'a FusedConv,
    channel: usize,
}

impl InplaceOp2 for WriteInto<'_> {
    fn name(&self) -> &'static str {
        "fused-conv-into"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_layout: &Layout, x: &CpuStorage, x_layout: &Layout) -> Result<()> {
        let (b, _, h, w) = x_layout.shape().dims4()?;
        let (oh, ow) = (self.conv.out_side(h), self.conv.out_side(w));
        let (db, dc, dh, dw) = dst_layout.shape().dims4()?;
        if !dst_layout.is_contiguous() || (db, dh, dw) != (b, oh, ow) || self.channel + self.conv.c_out > dc {
            candle_core::bail!("fused conv into {:?} at channel {}: does not fit", dst_layout.shape(), self.channel);
        }
        let input = f32_input(x, self.name())?;
        let CpuStorage::F32(dst) = dst else {
            candle_core::bail!("{}: f32 only", self.name());
        };
        let start = dst_layout.start_offset() + self.channel * oh * ow;
        // SAFETY: checked above: image n's `c_out` planes from `channel` on
        // lie inside `dst`, which this op holds exclusively.
        unsafe { self.conv.run_into(input, x_layout, None, SharedOut(dst[start..].as_mut_ptr()), dc * oh * ow) }
    }
}

struct WithResidual<'a>(&'a FusedConv);

impl CustomOp2 for WithResidual<'_> {
    fn name(&self) -> &'static str {
        "fused-conv-residual"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout, residual: &CpuStorage, residual_layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = residual_layout.contiguous_offsets() else {
            candle_core::bail!("fused conv: contiguous residual only");
        };
        let residual = &f32_input(residual, self.name())?[start..end];
        let (b, _, h, w) = layout.shape().dims4()?;
        let expected = b * self.0.c_out * self.0.out_side(h) * self.0.out_side(w);
        if residual.len() != expected {
            candle_core::bail!("fused conv: residual of {} values, expected {expected}", residual.len());
        }
        self.0.run(f32_input(storage, self.name())?, layout, Some(residual))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, ModuleT};
    use candle_nn::Conv2dConfig;

    use super::*;

    /// Deterministic values in [-scale, scale).
    fn values(shape: &[usize], seed: usize, scale: f32, offset: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|i| offset + scale * (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    fn conv(c_in: usize, c_out: usize, kernel: usize, stride: usize, padding: usize, seed: usize) -> Conv2d {
        let fan_in = (c_in * kernel * kernel) as f32;
        let config = Conv2dConfig { padding, stride, ..Default::default() };
        Conv2d::new(values(&[c_out, c_in, kernel, kernel], seed, 1.0 / fan_in.sqrt(), 0.0), None, config)
    }

    fn batch_norm(c: usize, seed: usize) -> BatchNorm {
        BatchNorm::new(
            c,
            values(&[c], seed, 0.2, 0.0),
            values(&[c], seed + 1, 0.5, 1.0),
            values(&[c], seed + 2, 0.3, 1.0),
            values(&[c], seed + 3, 0.1, 0.0),
            1e-5,
        )
        .expect("batch norm")
    }

    fn assert_close(what: &str, fused: &Tensor, reference: &Tensor) {
        let (a, b): (Vec<f32>, Vec<f32>) = (fused.flatten_all().unwrap().to_vec1().unwrap(), reference.flatten_all().unwrap().to_vec1().unwrap());
        assert_eq!(a.len(), b.len(), "{what}: sizes");
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs() / scale).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{what}: fused differs from candle-nn by {worst:e} relative");
    }

    /// Every way `FusedConv::run` cuts the work (images side by side, blocks
    /// of output channels, blocks of pixels, one block), with im2col (3x3,
    /// stride 2), a residual, a pre-activation over a channel prefix, and a
    /// write into a wider buffer, at 1, 2 and 4 threads and batches of 1
    /// and 3, against candle-nn's layers.
    #[test]
    fn fused_convolutions_match_candle_nn_however_the_work_is_cut() {
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                for batch in [1, 3] {
                    let at = format!("{threads} threads, batch {batch}");
                    // 3x3, 48 channels out of 20x20 pixels: blocks of pixels.
                    let (c, bn) = (conv(64, 48, 3, 1, 1, 1), batch_norm(48, 2));
                    let x = values(&[batch, 64, 20, 20], 3, 1.0, 0.0);
                    let reference = bn.forward_t(&c.forward(&x).unwrap(), false).unwrap().relu().unwrap();
                    assert_close(&format!("3x3 + bn + relu, {at}"), &FusedConv::new(&c, Some(&bn), true).unwrap().forward(&x).unwrap(), &reference);

                    // 3x3 stride 2 to 7x7, 96 channels: blocks of channels; residual.
                    let (c, bn) = (conv(64, 96, 3, 2, 1, 4), batch_norm(96, 5));
                    let x = values(&[batch, 64, 13, 13], 6, 1.0, 0.0);
                    let r = values(&[batch, 96, 7, 7], 7, 1.0, 0.0);
                    let reference = (bn.forward_t(&c.forward(&x).unwrap(), false).unwrap() + &r).unwrap().relu().unwrap();
                    let fused = FusedConv::new(&c, Some(&bn), true).unwrap().forward_with_residual(&x, &r).unwrap();
                    assert_close(&format!("3x3 stride 2 + bn + residual + relu, {at}"), &fused, &reference);

                    // 1x1 after relu(norm(.)) over the first 80 of 100 channels.
                    let (pre, c, bn) = (batch_norm(80, 8), conv(80, 128, 1, 1, 0, 9), batch_norm(128, 10));
                    let buffer = values(&[batch, 100, 14, 14], 11, 2.0, 0.0);
                    let prefix = buffer.narrow(1, 0, 80).unwrap();
                    let activated = pre.forward_t(&prefix.contiguous().unwrap(), false).unwrap().relu().unwrap();
                    let reference = bn.forward_t(&c.forward(&activated).unwrap(), false).unwrap().relu().unwrap();
                    let fused = FusedConv::new(&c, Some(&bn), true).unwrap().with_pre_activation(ChannelAffine::from_batch_norm(&pre, true).unwrap()).unwrap();
                    assert_close(&format!("relu(norm) + 1x1 + bn + relu on a channel prefix, {at}"), &fused.forward(&prefix).unwrap(), &reference);

                    // 3x3 written into channels 96..128 of a 160-channel buffer.
                    let c = conv(128, 32, 3, 1, 1, 12);
                    let x = values(&[batch, 128, 14, 14], 13, 1.0, 0.0);
                    let dst = values(&[batch, 160, 14, 14], 14, 1.0, 0.0);
                    let before = dst.copy().unwrap();
                    FusedConv::new(&c, None, false).unwrap().forward_into(&x, &dst, 96).unwrap();
                    let reference = Tensor::cat(&[before.narrow(1, 0, 96).unwrap(), c.forward(&x).unwrap(), before.narrow(1, 128, 32).unwrap()], 1).unwrap();
                    assert_close(&format!("3x3 into a buffer at channel 96, {at}"), &dst, &reference);
                    assert!(FusedConv::new(&c, None, false).unwrap().forward_into(&x, &dst, 140).is_err(), "a write past the buffer's channels is refused");
                }
            });
        }
    }
}
