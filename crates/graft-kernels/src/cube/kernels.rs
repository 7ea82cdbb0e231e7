//! The CubeCL kernels behind graft's fused ops on the Cube backend (wgpu), forward and backward,
//! all in f32. They compute what the Flex kernels compute, in the same order where it matters
//! (`x + bias + residual`, scores `scale·q·k + bias`, masked scores `f32::MIN`), so the two
//! backends agree to rounding.
//!
//! Every kernel binds at most seven tensors, leaving room under the eight storage buffers per
//! shader stage that the most limited wgpu adapters offer. Optional operands come with a
//! `#[comptime]` flag and a one-element stand-in, so an absent bias costs no code.
//! Nothing here uses plane (subgroup) operations, which software Vulkan turns off, nor shared
//! (workgroup) memory: with the workspace's SPIR-V compiler, every kernel that declared it
//! (graft's first versions of these, burn's matmul and whole-tensor sum) crashed Mesa 22.3's
//! lavapipe, the software Vulkan these kernels are tested on, while compiling its pipeline
//! (cubecl 0.11.3 declares workgroup memory as a `Workgroup` variable holding a pointer). So each
//! unit owns a whole row (layer norm) or a whole query (attention) and reads its operands from
//! global memory; staging key blocks in shared memory is the next step on a GPU.

use cubecl::prelude::*;

use crate::math::{ERF_ONE, ERF_SMALL, ERF_SPLIT, ERFC_CENTER, ERFC_HALF_WIDTH, ERFC_SCALED};

/// Keys per block of the attention forward kernel's online softmax (scores kept in registers).
pub const KEY_BLOCK: usize = 32;
/// Rows one unit sums in the layer-norm parameter-gradient kernel.
pub const ROWS_PER_CHUNK: usize = 64;

/// What a masked score becomes, as `masked_fill(f32::MIN)` does in the Flex kernel: a row with
/// every key masked then attends uniformly instead of dividing by zero.
const MASKED: f32 = f32::MIN;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// `1/√(2π)`, the standard normal density's factor.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

const S0: f32 = ERF_SMALL[0];
const S1: f32 = ERF_SMALL[1];
const S2: f32 = ERF_SMALL[2];
const S3: f32 = ERF_SMALL[3];
const S4: f32 = ERF_SMALL[4];
const S5: f32 = ERF_SMALL[5];
const S6: f32 = ERF_SMALL[6];
const C0: f32 = ERFC_SCALED[0];
const C1: f32 = ERFC_SCALED[1];
const C2: f32 = ERFC_SCALED[2];
const C3: f32 = ERFC_SCALED[3];
const C4: f32 = ERFC_SCALED[4];
const C5: f32 = ERFC_SCALED[5];
const C6: f32 = ERFC_SCALED[6];
const C7: f32 = ERFC_SCALED[7];
const C8: f32 = ERFC_SCALED[8];
const C9: f32 = ERFC_SCALED[9];
const C10: f32 = ERFC_SCALED[10];
const ERFC_SCALE: f32 = 1.0 / ERFC_HALF_WIDTH;

/// `erf(x)` with the Flex kernel's polynomials (`math.rs`): `x·P(x²)` below 0.75,
/// `1 − e^(−x²)·R(1/|x|)` up to 3.92, ±1 beyond.
#[cube]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let x2 = x * x;
    let small_poly = ((((S6 * x2 + S5) * x2 + S4) * x2 + S3) * x2 + S2) * x2 + S1;
    let small = x * S0 + (x * x2) * small_poly;
    let t = (1.0f32 / max(a, ERF_SPLIT) - ERFC_CENTER) * ERFC_SCALE;
    let mut r = C10 * t + C9;
    r = r * t + C8;
    r = r * t + C7;
    r = r * t + C6;
    r = r * t + C5;
    r = r * t + C4;
    r = r * t + C3;
    r = r * t + C2;
    r = r * t + C1;
    r = r * t + C0;
    let tail = (0.0f32 - x2).exp() * r;
    let large = select(a >= ERF_ONE, 1.0f32, 1.0f32 - tail);
    let large = select(x < 0.0f32, 0.0f32 - large, large);
    select(a < ERF_SPLIT, small, large)
}

/// Exact (erf) GELU of `x + bias`, one unit per element of contiguous tensors: `out = GELU(u)`,
/// or with `backward`, `out = grad · GELU'(u)` where `GELU'(u) = Φ(u) + u·φ(u)`.
#[cube(launch)]
pub fn gelu_kernel(
    x: &Tensor<f32>,
    bias: &Tensor<f32>,
    grad: &Tensor<f32>,
    out: &mut Tensor<f32>,
    #[comptime] has_bias: bool,
    #[comptime] backward: bool,
) {
    let index = ABSOLUTE_POS;
    if index >= out.len() {
        terminate!();
    }
    let mut u = x[index];
    if has_bias {
        u += bias[index % bias.len()];
    }
    let e = erf(u * FRAC_1_SQRT_2);
    if backward {
        let density = (u * u * -0.5f32).exp() * FRAC_1_SQRT_2PI;
        out[index] = grad[index] * (0.5f32 * (1.0f32 + e) + u * density);
    } else {
        // `u/2 · (1 + erf)` rounded as the Flex kernel rounds it: `u/2 · erf + u/2`.
        let half = u * 0.5f32;
        out[index] = half * e + half;
    }
}

/// Element `at` (in column `column`) of `x + bias + residual`, all contiguous.
#[cube]
fn summed(
    x: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    at: usize,
    column: usize,
    #[comptime] has_bias: bool,
    #[comptime] has_residual: bool,
) -> f32 {
    let mut s = x[at];
    if has_bias {
        s += bias[column];
    }
    if has_residual {
        s += residual[at];
    }
    s
}

/// `out = LayerNorm(x + bias + residual)` over rows of `gamma.len()`, one unit per row, mean
/// then biased variance (two passes, as the Flex kernel); `stats` gets each row's mean and
/// `1/√(variance + ε)` for the backward pass.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_kernel(
    x: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    gamma: &Tensor<f32>,
    beta: &Tensor<f32>,
    out: &mut Tensor<f32>,
    stats: &mut Tensor<f32>,
    epsilon: f32,
    #[comptime] has_bias: bool,
    #[comptime] has_residual: bool,
    #[comptime] has_beta: bool,
) {
    let row = ABSOLUTE_POS;
    let width = gamma.len();
    if row * width >= out.len() {
        terminate!();
    }
    let mut total = 0.0f32;
    for column in 0..width {
        total += summed(
            x,
            bias,
            residual,
            row * width + column,
            column,
            has_bias,
            has_residual,
        );
    }
    let mean = total / f32::cast_from(width);
    let mut squares = 0.0f32;
    for column in 0..width {
        let d = summed(
            x,
            bias,
            residual,
            row * width + column,
            column,
            has_bias,
            has_residual,
        ) - mean;
        squares += d * d;
    }
    let variance = squares / f32::cast_from(width);
    let inverse = 1.0f32 / (variance + epsilon).sqrt();
    for column in 0..width {
        let s = summed(
            x,
            bias,
            residual,
            row * width + column,
            column,
            has_bias,
            has_residual,
        );
        let mut y = (s - mean) * inverse * gamma[column];
        if has_beta {
            y += beta[column];
        }
        out[row * width + column] = y;
    }
    stats[row * 2] = mean;
    stats[row * 2 + 1] = inverse;
}

/// The gradient of `LayerNorm(s)` with respect to its input `s = x + bias + residual`:
/// `ds = rstd·(g·γ − mean(g·γ) − x̂·mean(g·γ·x̂))`, one unit per row.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_backward_kernel(
    x: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    gamma: &Tensor<f32>,
    stats: &Tensor<f32>,
    grad: &Tensor<f32>,
    ds: &mut Tensor<f32>,
    #[comptime] has_bias: bool,
    #[comptime] has_residual: bool,
) {
    let row = ABSOLUTE_POS;
    let width = gamma.len();
    if row * width >= ds.len() {
        terminate!();
    }
    let mean = stats[row * 2];
    let inverse = stats[row * 2 + 1];
    let mut sum_g = 0.0f32;
    let mut sum_gx = 0.0f32;
    for column in 0..width {
        let at = row * width + column;
        let s = summed(x, bias, residual, at, column, has_bias, has_residual);
        let g = grad[at] * gamma[column];
        sum_g += g;
        sum_gx += g * (s - mean) * inverse;
    }
    let mean_g = sum_g / f32::cast_from(width);
    let mean_gx = sum_gx / f32::cast_from(width);
    for column in 0..width {
        let at = row * width + column;
        let x_hat =
            (summed(x, bias, residual, at, column, has_bias, has_residual) - mean) * inverse;
        ds[at] = inverse * (grad[at] * gamma[column] - mean_g - x_hat * mean_gx);
    }
}

/// Partial sums of `γ`'s and `β`'s gradients, `g·x̂` and `g`, over chunks of
/// [`ROWS_PER_CHUNK`] rows: one unit per (chunk, column), written as `[chunks, width]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_parameters_kernel(
    x: &Tensor<f32>,
    bias: &Tensor<f32>,
    residual: &Tensor<f32>,
    stats: &Tensor<f32>,
    grad: &Tensor<f32>,
    gamma_partial: &mut Tensor<f32>,
    beta_partial: &mut Tensor<f32>,
    #[comptime] has_bias: bool,
    #[comptime] has_residual: bool,
) {
    let index = ABSOLUTE_POS;
    if index >= gamma_partial.len() {
        terminate!();
    }
    let chunks = gamma_partial.shape(0);
    let width = gamma_partial.len() / chunks;
    let rows = grad.len() / width;
    let chunk = index / width;
    let column = index % width;
    let first = chunk * ROWS_PER_CHUNK;
    let last = min(first + ROWS_PER_CHUNK, rows);
    let mut sum_gx = 0.0f32;
    let mut sum_g = 0.0f32;
    for row in first..last {
        let s = summed(
            x,
            bias,
            residual,
            row * width + column,
            column,
            has_bias,
            has_residual,
        );
        let x_hat = (s - stats[row * 2]) * stats[row * 2 + 1];
        let g = grad[row * width + column];
        sum_gx += g * x_hat;
        sum_g += g;
    }
    gamma_partial[index] = sum_gx;
    beta_partial[index] = sum_g;
}

/// Offset of element `[b, h, i, 0]` of a `[batch, heads, seq_q, seq_k]` term that may broadcast
/// (size 1, or stride 0) along any dimension.
#[cube]
fn term_row<T: CubePrimitive>(term: &Tensor<T>, b: usize, h: usize, i: usize) -> usize {
    let sb = select(term.shape(0) == 1, 0usize, term.stride(0));
    let sh = select(term.shape(1) == 1, 0usize, term.stride(1));
    let si = select(term.shape(2) == 1, 0usize, term.stride(2));
    b * sb + h * sh + i * si
}

/// The stride along keys of a term read through [`term_row`].
#[cube]
fn term_key_stride<T: CubePrimitive>(term: &Tensor<T>) -> usize {
    select(term.shape(3) == 1, 0usize, term.stride(3))
}

/// Offset of element `[b, i, h·head_dim]` of a `[batch, seq, heads·head_dim]` tensor read
/// through its strides (a view of a wider QKV product, or a gradient of any layout).
#[cube]
fn head_row(t: &Tensor<f32>, b: usize, i: usize, h: usize, #[comptime] head_dim: usize) -> usize {
    b * t.stride(0) + i * t.stride(1) + h * head_dim * t.stride(2)
}

/// `softmax(scale·Q·Kᵀ + bias, masked → f32::MIN)·V`, one unit per (batch, head, query),
/// walking the keys in blocks of `key_block` with an online softmax: each block's scores are
/// kept in registers, the running maximum and sum updated once per block and the context
/// rescaled when the maximum grows, so no `[seq_q, seq_k]` scores are ever stored. `out` is
/// `[batch, seq_q, heads·head_dim]` contiguous; `stats` is `[batch, heads, seq_q, 2]`: each row's
/// maximum score and its sum of `e^(s − max)`, from which the backward pass recomputes the
/// probabilities.
#[cube(launch)]
// An `if` on a comptime flag decides whether the code inside is generated at all: it stays apart
// from the runtime test it holds.
#[allow(clippy::too_many_arguments, clippy::collapsible_if)]
pub fn attention_kernel<M: Int>(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    mask: &Tensor<M>,
    bias: &Tensor<f32>,
    out: &mut Tensor<f32>,
    stats: &mut Tensor<f32>,
    scale: f32,
    #[comptime] heads: usize,
    #[comptime] head_dim: usize,
    #[comptime] key_block: usize,
    #[comptime] has_mask: bool,
    #[comptime] has_bias: bool,
    #[define(M)] _mask_dtype: ElemType,
) {
    let index = ABSOLUTE_POS;
    if index * 2 >= stats.len() {
        terminate!();
    }
    let seq_q = q.shape(1);
    let seq_k = k.shape(1);
    let i = index % seq_q;
    let h = (index / seq_q) % heads;
    let b = index / (seq_q * heads);

    let mut query = Array::<f32>::new(head_dim);
    let mut context = Array::<f32>::new(head_dim);
    let q_row = head_row(q, b, i, h, head_dim);
    for c in 0..head_dim {
        query[c] = q[q_row + c * q.stride(2)];
        context[c] = 0.0f32;
    }
    // Where this query's row of the mask and bias starts, and their stride along keys (the
    // stand-ins of absent ones are never read).
    let mut mask_row = 0usize;
    let mut mask_step = 0usize;
    if has_mask {
        mask_row = term_row(mask, b, h, i);
        mask_step = term_key_stride(mask);
    }
    let mut bias_row = 0usize;
    let mut bias_step = 0usize;
    if has_bias {
        bias_row = term_row(bias, b, h, i);
        bias_step = term_key_stride(bias);
    }

    let mut scores = Array::<f32>::new(key_block);
    let mut running_max = f32::new(MASKED);
    let mut running_sum = 0.0f32;
    for first in range_stepped(0, seq_k, key_block) {
        let count = min(key_block, seq_k - first);
        let mut block_max = f32::new(MASKED);
        for r in 0..count {
            let j = first + r;
            let k_row = head_row(k, b, j, h, head_dim);
            let mut dot = 0.0f32;
            for c in 0..head_dim {
                dot += query[c] * k[k_row + c * k.stride(2)];
            }
            let mut s = dot * scale;
            if has_bias {
                s += bias[bias_row + j * bias_step];
            }
            if has_mask {
                if u32::cast_from(mask[mask_row + j * mask_step]) != 0u32 {
                    s = MASKED;
                }
            }
            scores[r] = s;
            block_max = max(block_max, s);
        }
        let new_max = max(running_max, block_max);
        let correction = (running_max - new_max).exp();
        running_sum *= correction;
        for c in 0..head_dim {
            context[c] *= correction;
        }
        for r in 0..count {
            let p = (scores[r] - new_max).exp();
            running_sum += p;
            let v_row = head_row(v, b, first + r, h, head_dim);
            for c in 0..head_dim {
                context[c] += p * v[v_row + c * v.stride(2)];
            }
        }
        running_max = new_max;
    }
    let out_row = (b * seq_q + i) * heads * head_dim + h * head_dim;
    let inverse = 1.0f32 / running_sum;
    for c in 0..head_dim {
        out[out_row + c] = context[c] * inverse;
    }
    stats[index * 2] = running_max;
    stats[index * 2 + 1] = running_sum;
}

/// The mask and bias of the scores as one additive term for the backward kernels: `f32::MIN`
/// where masked, else the bias (or 0), over `terms`' shape (each dimension the full size, or 1
/// where neither operand varies along it). One unit per element.
#[cube(launch)]
#[allow(clippy::collapsible_if)] // as in `attention_kernel`
pub fn score_terms_kernel<M: Int>(
    mask: &Tensor<M>,
    bias: &Tensor<f32>,
    terms: &mut Tensor<f32>,
    #[comptime] has_mask: bool,
    #[comptime] has_bias: bool,
    #[define(M)] _mask_dtype: ElemType,
) {
    let index = ABSOLUTE_POS;
    if index >= terms.len() {
        terminate!();
    }
    let j = index % terms.shape(3);
    let i = (index / terms.shape(3)) % terms.shape(2);
    let h = (index / (terms.shape(3) * terms.shape(2))) % terms.shape(1);
    let b = index / (terms.shape(3) * terms.shape(2) * terms.shape(1));
    let mut term = 0.0f32;
    if has_bias {
        term = bias[term_row(bias, b, h, i) + j * term_key_stride(bias)];
    }
    if has_mask {
        if u32::cast_from(mask[term_row(mask, b, h, i) + j * term_key_stride(mask)]) != 0u32 {
            term = MASKED;
        }
    }
    terms[index] = term;
}

/// `rows[b, h, i] = (max, sum, D)`: the forward pass's row statistics beside
/// `D = Σ_c dO·O` over the head's columns, which every backward kernel needs per query.
#[cube(launch)]
pub fn attention_rows_kernel(
    out: &Tensor<f32>,
    grad: &Tensor<f32>,
    stats: &Tensor<f32>,
    rows: &mut Tensor<f32>,
    #[comptime] heads: usize,
    #[comptime] head_dim: usize,
) {
    let index = ABSOLUTE_POS;
    if index * 2 >= stats.len() {
        terminate!();
    }
    let seq_q = out.shape(1);
    let i = index % seq_q;
    let h = (index / seq_q) % heads;
    let b = index / (seq_q * heads);
    let out_row = (b * seq_q + i) * heads * head_dim + h * head_dim;
    let grad_row = head_row(grad, b, i, h, head_dim);
    let mut d = 0.0f32;
    for c in 0..head_dim {
        d += out[out_row + c] * grad[grad_row + c * grad.stride(2)];
    }
    rows[index * 3] = stats[index * 2];
    rows[index * 3 + 1] = stats[index * 2 + 1];
    rows[index * 3 + 2] = d;
}

/// One score's probability and its gradient: `(p, ds)` with `p = e^(s − max)/sum` and
/// `ds = p·(dO·V − D)`, 0 where the key is masked (the score was a constant there).
#[cube]
#[allow(clippy::too_many_arguments)]
fn score_gradient(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    terms: &Tensor<f32>,
    grad: &Tensor<f32>,
    rows: &Tensor<f32>,
    b: usize,
    h: usize,
    i: usize,
    j: usize,
    scale: f32,
    #[comptime] heads: usize,
    #[comptime] head_dim: usize,
    #[comptime] has_terms: bool,
) -> (f32, f32) {
    let seq_q = q.shape(1);
    let q_row = head_row(q, b, i, h, head_dim);
    let k_row = head_row(k, b, j, h, head_dim);
    let v_row = head_row(v, b, j, h, head_dim);
    let grad_row = head_row(grad, b, i, h, head_dim);
    let mut dot = 0.0f32;
    let mut dp = 0.0f32;
    for c in 0..head_dim {
        dot += q[q_row + c * q.stride(2)] * k[k_row + c * k.stride(2)];
        dp += grad[grad_row + c * grad.stride(2)] * v[v_row + c * v.stride(2)];
    }
    let mut s = dot * scale;
    let mut masked = false;
    if has_terms {
        let term = terms[term_row(terms, b, h, i) + j * term_key_stride(terms)];
        masked = term == MASKED;
        s = select(masked, MASKED, s + term);
    }
    let at = ((b * heads + h) * seq_q + i) * 3;
    let p = (s - rows[at]).exp() / rows[at + 1];
    let ds = select(masked, 0.0f32, p * (dp - rows[at + 2]));
    (p, ds)
}

/// Which gradient [`attention_gradient_kernel`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttentionGradient {
    /// `dQ = scale·Σ_j ds_ij·K_j`, one unit per (batch, head, query), into
    /// `[batch, seq_q, heads·head_dim]`.
    Queries,
    /// `dK = scale·Σ_i ds_ij·Q_i` and `dV = Σ_i p_ij·dO_i`, one unit per (batch, head, key), into
    /// `[batch, seq_k, 2·heads·head_dim]` (dK's columns, then dV's).
    KeysAndValues,
    /// The scores' gradient `ds`, one unit per score, into `[batch, heads, seq_q, seq_k]`: the
    /// gradient of an additive score bias before it is summed to the bias's shape.
    Scores,
}

/// One of the attention gradients ([`AttentionGradient`]) into `out`, contiguous, from the
/// forward operands, the additive score terms, the output's gradient and the rows of
/// [`attention_rows_kernel`]. Each unit recomputes the scores it needs (nothing `[seq, seq]`
/// is stored unless the scores' gradient itself is asked for).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention_gradient_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    terms: &Tensor<f32>,
    grad: &Tensor<f32>,
    rows: &Tensor<f32>,
    out: &mut Tensor<f32>,
    scale: f32,
    #[comptime] heads: usize,
    #[comptime] head_dim: usize,
    #[comptime] has_terms: bool,
    #[comptime] output: AttentionGradient,
) {
    let seq_q = q.shape(1);
    let seq_k = k.shape(1);
    let index = ABSOLUTE_POS;
    if comptime!(output == AttentionGradient::Scores) {
        if index >= out.len() {
            terminate!();
        }
        let j = index % seq_k;
        let i = (index / seq_k) % seq_q;
        let h = (index / (seq_k * seq_q)) % heads;
        let b = index / (seq_k * seq_q * heads);
        let (_p, ds) = score_gradient(
            q, k, v, terms, grad, rows, b, h, i, j, scale, heads, head_dim, has_terms,
        );
        out[index] = ds;
    } else {
        // Each unit owns one query (dQ) or one key (dK, dV) and sums over the others.
        let per_query = comptime!(output == AttentionGradient::Queries);
        let mut owned = seq_k;
        let mut others = seq_q;
        if per_query {
            owned = seq_q;
            others = seq_k;
        }
        if index >= q.shape(0) * heads * owned {
            terminate!();
        }
        let own = index % owned;
        let h = (index / owned) % heads;
        let b = index / (owned * heads);
        let mut first = Array::<f32>::new(head_dim);
        let mut second = Array::<f32>::new(head_dim);
        for c in 0..head_dim {
            first[c] = 0.0f32;
            second[c] = 0.0f32;
        }
        for other in 0..others {
            let mut i = other;
            let mut j = own;
            if per_query {
                i = own;
                j = other;
            }
            let (p, ds) = score_gradient(
                q, k, v, terms, grad, rows, b, h, i, j, scale, heads, head_dim, has_terms,
            );
            if per_query {
                let k_row = head_row(k, b, j, h, head_dim);
                for c in 0..head_dim {
                    first[c] += ds * k[k_row + c * k.stride(2)];
                }
            } else {
                let q_row = head_row(q, b, i, h, head_dim);
                let grad_row = head_row(grad, b, i, h, head_dim);
                for c in 0..head_dim {
                    first[c] += ds * q[q_row + c * q.stride(2)];
                    second[c] += p * grad[grad_row + c * grad.stride(2)];
                }
            }
        }
        let width = heads * head_dim;
        if per_query {
            let out_row = (b * seq_q + own) * width + h * head_dim;
            for c in 0..head_dim {
                out[out_row + c] = first[c] * scale;
            }
        } else {
            let out_row = (b * seq_k + own) * 2 * width + h * head_dim;
            for c in 0..head_dim {
                out[out_row + c] = first[c] * scale;
                out[out_row + width + c] = second[c];
            }
        }
    }
}
