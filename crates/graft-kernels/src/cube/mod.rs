//! graft's fused ops on burn's Cube backend (wgpu), written as CubeCL kernels, with their
//! backward passes so that training on a wgpu autodiff device runs them too.
//!
//! Two backend extensions:
//! - [`CubeKernels`] (`Cube`, `Fusion`): the kernels themselves, forward and backward, each
//!   returning what its backward needs (row statistics). The macro makes the `Fusion` wrapper
//!   that queues each call in burn's fusion stream as one opaque operation; [`CubeBackend`]
//!   launches the kernels of [`kernels`].
//! - [`CubeFusedOps`] (`Cube`, `Autodiff`): the differentiable ops the public functions call.
//!   Without autodiff they run the forward kernel and drop its statistics; on `Autodiff` they
//!   run it, keep what the backward needs, and register a burn-autodiff `Backward` step that
//!   launches the backward kernels (see `autodiff.rs`). The extension macro only routes autodiff
//!   tensors to `impl CubeFusedOps for Autodiff<B, C>`; the backward steps are written by hand
//!   as burn-autodiff's own ops are (`prepare`, `compute_bound`, `stateful`, `grads.register`).
//!
//! Optional operands travel as tensors with no elements, as in the Flex extension.

mod autodiff;
pub mod kernels;

use std::sync::atomic::{AtomicUsize, Ordering};

use burn_cubecl::CubeBackend;
use burn_cubecl::kernel::{into_contiguous, untile};
use burn_cubecl::ops::numeric::{empty_device_contiguous_dtype, zeros_client};
use burn_cubecl::tensor::CubeTensor;
use burn_fusion::custom::TensorSpec;
use cubecl::prelude::{CubeDim, ElemType};
use cubecl::{CubeCount, calculate_cube_count_elemwise};

use burn::backend::cubecl::dtype_to_storage_type;
use burn::backend::ops::FloatTensorOps;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Backend, TensorMetadata, backend_extension};
use burn::tensor::{DType, Shape};

use kernels::{AttentionGradient, KEY_BLOCK, ROWS_PER_CHUNK};

/// The `burn` that the extension macro's generated code names. The workspace builds burn without
/// its `fusion` feature, which would only re-export `burn-fusion` as `burn::backend::fusion`;
/// the Cube backend is fused all the same (burn-wgpu turns fusion on). So this module's `burn` is
/// burn plus that one re-export, rather than a feature that would rebuild burn.
#[allow(unused_imports)]
mod burn {
    pub use ::burn::*;
    pub mod backend {
        pub use ::burn::backend::*;
        pub use burn_fusion as fusion;
    }
}

/// The fused kernels on the Cube backend, forward and backward, in f32. Absent optional operands
/// are tensors with no elements.
#[backend_extension(Cube, Fusion)]
pub trait CubeKernels: Backend {
    /// `GELU(x + bias)`, exact (erf) GELU, bias over the last dimension.
    #[fusion(dtype = x, shape = x)]
    fn gelu_forward(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;

    /// The gradient of [`gelu_forward`](Self::gelu_forward) with respect to `x` (and, summed
    /// over rows, to `bias`).
    #[fusion(dtype = x, shape = x)]
    fn gelu_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// `LayerNorm(x + bias + residual)` over the last dimension, and each row's mean and
    /// `1/√(variance + ε)` as `[rows, 2]`.
    #[fusion(meta = layer_norm_meta)]
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of [`layer_norm_forward`](Self::layer_norm_forward): with respect to its
    /// summed input `x + bias + residual` (shaped as `x`), to `gamma` and to `beta`.
    #[fusion(meta = layer_norm_backward_meta)]
    fn layer_norm_backward(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// Scaled dot-product attention over `[batch, seq, heads·head_dim]` queries, keys and values
    /// (any strides), as the Flex `attention` computes it, and each row's maximum score and sum
    /// of exponentials as `[batch, heads, seq_q, 2]`.
    #[fusion(meta = attention_meta)]
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of [`attention_forward`](Self::attention_forward) from its output, its row
    /// statistics and the output's gradient: `dQ` `[batch, seq_q, width]`, `dK` and `dV` side by
    /// side as `[batch, seq_k, 2·width]`, and the scores' gradient `[batch, heads, seq_q, seq_k]`
    /// (the bias's, before any broadcast is summed) when `bias_grad`, else a `[1, 1, 1, 1]` zero.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = attention_backward_meta)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        stats: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        bias_grad: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The differentiable fused ops on the Cube backend, what the crate's public functions call on a
/// wgpu device with or without autodiff.
#[backend_extension(Cube, Autodiff)]
pub trait CubeFusedOps: Backend {
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    fn add_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self>;
}

impl CubeFusedOps for burn::backend::Cube {
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_forward(x, bias)
    }

    fn add_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm_forward(x, bias, residual, gamma, beta, epsilon).0
    }

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::attention_forward(q, k, v, mask, bias, heads, scale).0
    }
}

fn layer_norm_meta(
    x: &TensorSpec,
    _bias: &TensorSpec,
    _residual: &TensorSpec,
    gamma: &TensorSpec,
    _beta: &TensorSpec,
    _epsilon: &f64,
) -> (TensorSpec, TensorSpec) {
    let rows = x.shape.num_elements() / gamma.shape.num_elements().max(1);
    let stats = TensorSpec::new(Shape::new([rows, 2]), x.dtype);
    (x.clone(), stats)
}

fn layer_norm_backward_meta(
    x: &TensorSpec,
    _bias: &TensorSpec,
    _residual: &TensorSpec,
    gamma: &TensorSpec,
    _stats: &TensorSpec,
    _grad: &TensorSpec,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), gamma.clone(), gamma.clone())
}

fn attention_meta(
    q: &TensorSpec,
    _k: &TensorSpec,
    _v: &TensorSpec,
    _mask: &TensorSpec,
    _bias: &TensorSpec,
    heads: &usize,
    _scale: &f64,
) -> (TensorSpec, TensorSpec) {
    let stats = Shape::new([q.shape[0], *heads, q.shape[1], 2]);
    (q.clone(), TensorSpec::new(stats, q.dtype))
}

#[allow(clippy::too_many_arguments)]
fn attention_backward_meta(
    q: &TensorSpec,
    k: &TensorSpec,
    _v: &TensorSpec,
    _mask: &TensorSpec,
    _bias: &TensorSpec,
    _out: &TensorSpec,
    _stats: &TensorSpec,
    _grad: &TensorSpec,
    heads: &usize,
    _scale: &f64,
    bias_grad: &bool,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let [batch, seq_q, seq_k, width] = [q.shape[0], q.shape[1], k.shape[1], q.shape[2]];
    let dkv = Shape::new([batch, seq_k, 2 * width]);
    let scores = score_gradient_shape([batch, *heads, seq_q, seq_k], *bias_grad);
    (
        q.clone(),
        TensorSpec::new(dkv, q.dtype),
        TensorSpec::new(scores, q.dtype),
    )
}

/// The shape of [`CubeKernels::attention_backward`]'s third output.
fn score_gradient_shape(scores: [usize; 4], bias_grad: bool) -> Shape {
    Shape::new(if bias_grad { scores } else { [1; 4] })
}

static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// How many times graft's Cube kernels have been launched in this process (each kernel of a
/// fused op counts), so a test can tell that the fused path, not burn's ops, ran.
pub fn launches() -> usize {
    LAUNCHES.load(Ordering::Relaxed)
}

fn launched() {
    LAUNCHES.fetch_add(1, Ordering::Relaxed);
}

/// An optional operand: `None` for the stand-in with no elements.
fn present(t: CubeTensor) -> Option<CubeTensor> {
    (t.meta.num_elements() > 0).then_some(t)
}

/// A new contiguous f32 tensor on `like`'s device; its contents are whatever the kernel writes.
fn output(like: &CubeTensor, shape: impl Into<Shape>) -> CubeTensor {
    empty_device_contiguous_dtype(
        like.client.clone(),
        like.device.clone(),
        shape.into(),
        DType::F32,
    )
}

/// An optional f32 operand for a kernel, contiguous when `contiguous`, and whether it is
/// present; an absent one is bound as a one-element stand-in the kernel never reads.
fn f32_operand(t: CubeTensor, like: &CubeTensor, contiguous: bool) -> (CubeTensor, bool) {
    match present(t) {
        Some(t) if contiguous => (into_contiguous(t), true),
        Some(t) => (untile(t), true),
        None => (output(like, [1]), false),
    }
}

/// The attention mask as the kernels take it, its element type, and whether it is present.
fn mask_operand(mask: CubeTensor, like: &CubeTensor) -> (CubeTensor, ElemType, bool) {
    match present(mask) {
        Some(mask) => {
            let dtype = dtype_to_storage_type(mask.dtype);
            (untile(mask), dtype, true)
        }
        None => {
            let stand_in = empty_device_contiguous_dtype(
                like.client.clone(),
                like.device.clone(),
                Shape::new([1]),
                DType::U32,
            );
            (stand_in, dtype_to_storage_type(DType::U32), false)
        }
    }
}

/// Launch geometry for one unit per element of `units`.
fn elementwise(like: &CubeTensor, units: usize) -> (CubeCount, CubeDim) {
    let cube_dim = CubeDim::new(&like.client, units);
    let count = calculate_cube_count_elemwise(&like.client, units, cube_dim);
    (count, cube_dim)
}

fn dims3(t: &CubeTensor) -> [usize; 3] {
    let shape = t.meta.shape();
    assert_eq!(
        shape.num_dims(),
        3,
        "attention takes [batch, seq, width] tensors"
    );
    [shape[0], shape[1], shape[2]]
}

/// Checks that a mask or bias broadcasts to `dims`, as the Flex kernel requires.
fn check_term(term: &CubeTensor, dims: [usize; 4]) {
    let shape = term.meta.shape();
    assert_eq!(shape.num_dims(), 4, "attention masks and biases are 4-D");
    for (d, &size) in dims.iter().enumerate() {
        assert!(
            shape[d] == size || shape[d] == 1,
            "attention term of shape {shape:?} does not broadcast to {dims:?}"
        );
    }
}

/// Whether a broadcast term differs along dimension `d` (neither size 1 nor stride 0).
fn varies(term: &CubeTensor, d: usize) -> bool {
    term.meta.shape()[d] > 1 && term.meta.strides()[d] != 0
}

/// Keys per online-softmax block for `head_dim`: fewer for wide heads, whose query and context
/// already take `2·head_dim` registers per unit.
fn key_block(head_dim: usize) -> usize {
    (2048 / head_dim.max(1)).clamp(1, KEY_BLOCK)
}

/// Sums a `[..., d]` tensor's rows: the gradient of a bias added to every row.
fn sum_rows(t: CubeTensor, d: usize) -> CubeTensor {
    let rows = t.meta.num_elements() / d.max(1);
    let t = CubeBackend::float_reshape(t, Shape::new([rows, d]));
    CubeBackend::float_reshape(CubeBackend::float_sum_dim(t, 0), Shape::new([d]))
}

/// Launches `kernel` with one unit per element of `units` on `like`'s device: the tensors
/// (cloned into kernel arguments) then the other arguments, as the kernel declares them; and
/// counts the launch ([`launches`]).
macro_rules! launch {
    ($kernel:ident, $like:expr, $units:expr; $($tensor:expr),+; $($arg:expr),* $(,)?) => {{
        let like: &CubeTensor = $like;
        let (count, cube_dim) = elementwise(like, $units);
        kernels::$kernel::launch(
            &like.client,
            count,
            cube_dim,
            $($tensor.clone().into_tensor_arg(),)+
            $($arg,)*
        );
        launched();
    }};
}

/// `GELU(x + bias)`, or with `grad` its gradient with respect to `x`.
fn gelu(x: CubeTensor, bias: CubeTensor, grad: Option<CubeTensor>) -> CubeTensor {
    let x = into_contiguous(x);
    let out = output(&x, x.shape());
    let units = x.meta.num_elements();
    if units == 0 {
        return out;
    }
    let (bias, has_bias) = f32_operand(bias, &x, true);
    let backward = grad.is_some();
    let grad = grad.map_or_else(|| output(&x, [1]), into_contiguous);
    launch!(gelu_kernel, &x, units; x, bias, grad, out; has_bias, backward);
    out
}

impl CubeKernels for CubeBackend {
    fn gelu_forward(x: CubeTensor, bias: CubeTensor) -> CubeTensor {
        gelu(x, bias, None)
    }

    fn gelu_backward(x: CubeTensor, bias: CubeTensor, grad: CubeTensor) -> CubeTensor {
        gelu(x, bias, Some(grad))
    }

    fn layer_norm_forward(
        x: CubeTensor,
        bias: CubeTensor,
        residual: CubeTensor,
        gamma: CubeTensor,
        beta: CubeTensor,
        epsilon: f64,
    ) -> (CubeTensor, CubeTensor) {
        let x = into_contiguous(x);
        let gamma = into_contiguous(gamma);
        let width = gamma.meta.num_elements();
        let rows = x.meta.num_elements() / width.max(1);
        let out = output(&x, x.shape());
        let stats = output(&x, [rows, 2]);
        if rows * width == 0 {
            return (out, stats);
        }
        let (bias, has_bias) = f32_operand(bias, &x, true);
        let (residual, has_residual) = f32_operand(residual, &x, true);
        let (beta, has_beta) = f32_operand(beta, &x, true);
        if has_residual {
            assert_eq!(
                residual.shape(),
                x.shape(),
                "layer norm: the residual's shape differs from the input's"
            );
        }
        launch!(
            layer_norm_kernel, &x, rows;
            x, bias, residual, gamma, beta, out, stats;
            epsilon as f32, has_bias, has_residual, has_beta,
        );
        (out, stats)
    }

    fn layer_norm_backward(
        x: CubeTensor,
        bias: CubeTensor,
        residual: CubeTensor,
        gamma: CubeTensor,
        stats: CubeTensor,
        grad: CubeTensor,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let x = into_contiguous(x);
        let gamma = into_contiguous(gamma);
        let stats = into_contiguous(stats);
        let grad = into_contiguous(grad);
        let width = gamma.meta.num_elements();
        let rows = x.meta.num_elements() / width.max(1);
        let ds = output(&x, x.shape());
        let (bias, has_bias) = f32_operand(bias, &x, true);
        let (residual, has_residual) = f32_operand(residual, &x, true);
        if rows * width == 0 {
            let zeros = || {
                zeros_client(
                    x.client.clone(),
                    x.device.clone(),
                    [width].into(),
                    DType::F32,
                )
            };
            return (ds, zeros(), zeros());
        }
        launch!(
            layer_norm_backward_kernel, &x, rows;
            x, bias, residual, gamma, stats, grad, ds;
            has_bias, has_residual,
        );
        let chunks = rows.div_ceil(ROWS_PER_CHUNK);
        let gamma_partial = output(&x, [chunks, width]);
        let beta_partial = output(&x, [chunks, width]);
        launch!(
            layer_norm_parameters_kernel, &x, chunks * width;
            x, bias, residual, stats, grad, gamma_partial, beta_partial;
            has_bias, has_residual,
        );
        (
            ds,
            sum_rows(gamma_partial, width),
            sum_rows(beta_partial, width),
        )
    }

    fn attention_forward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
        bias: CubeTensor,
        heads: usize,
        scale: f64,
    ) -> (CubeTensor, CubeTensor) {
        let (q, k, v) = (untile(q), untile(k), untile(v));
        let [batch, seq_q, width] = dims3(&q);
        let seq_k = dims3(&k)[1];
        let head_dim = width / heads.max(1);
        assert_eq!(
            dims3(&v)[2],
            width,
            "attention: values must be as wide as queries"
        );
        let out = output(&q, [batch, seq_q, width]);
        let stats = output(&q, [batch, heads, seq_q, 2]);
        if batch * seq_q * width * seq_k == 0 {
            return (out, stats);
        }
        let (mask, mask_dtype, has_mask) = mask_operand(mask, &q);
        let (bias, has_bias) = f32_operand(bias, &q, false);
        let dims = [batch, heads, seq_q, seq_k];
        if has_mask {
            check_term(&mask, dims);
        }
        if has_bias {
            check_term(&bias, dims);
        }
        let (block, units) = (key_block(head_dim), batch * heads * seq_q);
        launch!(
            attention_kernel, &q, units;
            q, k, v, mask, bias, out, stats;
            scale as f32, heads, head_dim, block, has_mask, has_bias, mask_dtype,
        );
        (out, stats)
    }

    fn attention_backward(
        q: CubeTensor,
        k: CubeTensor,
        v: CubeTensor,
        mask: CubeTensor,
        bias: CubeTensor,
        out: CubeTensor,
        stats: CubeTensor,
        grad: CubeTensor,
        heads: usize,
        scale: f64,
        bias_grad: bool,
    ) -> (CubeTensor, CubeTensor, CubeTensor) {
        let (q, k, v, grad) = (untile(q), untile(k), untile(v), untile(grad));
        let (out, stats) = (into_contiguous(out), into_contiguous(stats));
        let [batch, seq_q, width] = dims3(&q);
        let seq_k = dims3(&k)[1];
        let head_dim = width / heads.max(1);
        let dims = [batch, heads, seq_q, seq_k];
        let dq = output(&q, [batch, seq_q, width]);
        let dkv = output(&q, [batch, seq_k, 2 * width]);
        let scores = score_gradient_shape(dims, bias_grad);
        let ds = if bias_grad {
            output(&q, scores)
        } else {
            zeros_client(q.client.clone(), q.device.clone(), scores, DType::F32)
        };
        if batch * seq_q * width * seq_k == 0 {
            return (dq, dkv, ds);
        }
        let scale = scale as f32;
        let (terms, has_terms) = score_terms(mask, bias, &q, dims);

        let rows = output(&q, [batch, heads, seq_q, 3]);
        let units = batch * heads * seq_q;
        launch!(attention_rows_kernel, &q, units; out, grad, stats, rows; heads, head_dim);

        let mut gradients = vec![
            (AttentionGradient::Queries, &dq, batch * heads * seq_q),
            (
                AttentionGradient::KeysAndValues,
                &dkv,
                batch * heads * seq_k,
            ),
        ];
        if bias_grad {
            gradients.push((AttentionGradient::Scores, &ds, ds.meta.num_elements()));
        }
        for (gradient, out, units) in gradients {
            launch!(
                attention_gradient_kernel, &q, units;
                q, k, v, terms, grad, rows, out;
                scale, heads, head_dim, has_terms, gradient,
            );
        }
        (dq, dkv, ds)
    }
}

/// The mask and bias as one additive term for the backward kernels ([`kernels::score_terms_kernel`]),
/// over the smallest shape both broadcast from, and whether there is one.
fn score_terms(
    mask: CubeTensor,
    bias: CubeTensor,
    like: &CubeTensor,
    dims: [usize; 4],
) -> (CubeTensor, bool) {
    let (mask, mask_dtype, has_mask) = mask_operand(mask, like);
    let (bias, has_bias) = f32_operand(bias, like, false);
    if !has_mask && !has_bias {
        return (output(like, [1, 1, 1, 1]), false);
    }
    let shape = std::array::from_fn::<usize, 4, _>(|d| {
        let full = (has_mask && varies(&mask, d)) || (has_bias && varies(&bias, d));
        if full { dims[d] } else { 1 }
    });
    let terms = output(like, shape);
    let units = terms.meta.num_elements();
    launch!(score_terms_kernel, like, units; mask, bias, terms; has_mask, has_bias, mask_dtype);
    (terms, true)
}
