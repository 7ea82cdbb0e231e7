//! graft's fused kernels for transformer encoders, added to burn through its backend extension:
//! CPU kernels on the Flex backend (`#[backend_extension(Flex)]`) and CubeCL kernels, forward and
//! backward, on the Cube backend over wgpu ([`cube`]).
//!
//! The functions below take and return ordinary `Tensor`s and pick their kernels from the device
//! ([`kernel_for`]):
//! - on a Flex device without autodiff (inference: embedding, feature extraction, prediction)
//!   they run the fused Flex kernels;
//! - on a wgpu device, with or without autodiff, [`gelu`], [`add_layer_norm`] and [`attention`]
//!   run the Cube kernels, and under autodiff their gradients come from the Cube backward
//!   kernels; [`linear`], [`feed_forward`] and [`self_attention`] compose burn's matmul with
//!   those three;
//! - everywhere else (ndarray, Flex training through autodiff) they compose burn's
//!   differentiable ops, so results and gradients there are burn's own.
//!
//! - [`gelu`]: exact GELU with a vectorized `erf` (absolute error ≤ 1e-7), optionally adding a
//!   bias first, in place.
//! - [`linear`]: one gemm over all rows with the bias written into the output first.
//! - [`linear_add`]: the same, accumulated into a residual's buffer instead of a new one.
//! - [`add_layer_norm`]: bias + residual + layer norm in one pass, in place.
//! - [`feed_forward`]: a post-norm layer's whole feed-forward block over chunks of rows, in place;
//!   see [`feed_forward`](mod@feed_forward).
//! - [`self_attention`]: a post-norm layer's whole self-attention block over chunks of whole
//!   sequences, in place; see [`self_attention`](mod@self_attention).
//! - [`attention`]: scaled dot-product attention reading Q/K/V in `[batch, seq, heads·head_dim]`
//!   (views of one QKV product) with an online softmax; see [`attention`](mod@attention).
//!
//! In-place kernels write into their input's buffer when nothing else holds it, so a layer's
//! activations reuse the gemm's output instead of allocating per op (Flex; the Cube kernels
//! write new buffers).

pub mod attention;
pub mod cube;
pub mod dense;
pub mod feed_forward;
pub mod math;
pub mod norm;
pub mod parts;
pub mod self_attention;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Backend, Dispatch, DispatchDevice, Flex, backend_extension};
use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Shape, Tensor, TensorData, activation};
use cube::CubeFusedOps;

/// Whether the fused kernels serve `device` (see [`kernel_for`]).
pub fn serves(device: &Device) -> bool {
    kernels(device) != Kernels::Burn
}

/// Which kernels the public functions run on `device`: `"flex"` (the Flex kernels: a Flex device
/// not recording gradients), `"cube"` (the Cube kernels: a wgpu device, with or without
/// autodiff) or `"burn"` (burn's own ops: anything else, or everywhere when the environment sets
/// `GRAFT_FUSED_KERNELS=0`, for comparisons). Operands that are not all f32 take burn's ops
/// wherever this says.
pub fn kernel_for(device: &Device) -> &'static str {
    match kernels(device) {
        Kernels::Flex => "flex",
        Kernels::Cube => "cube",
        Kernels::Burn => "burn",
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernels {
    Flex,
    Cube,
    Burn,
}

fn kernels(device: &Device) -> Kernels {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let enabled =
        *ENABLED.get_or_init(|| std::env::var("GRAFT_FUSED_KERNELS").as_deref() != Ok("0"));
    if !enabled {
        return Kernels::Burn;
    }
    match device.as_dispatch() {
        DispatchDevice::Flex(_) => Kernels::Flex,
        DispatchDevice::Cube(cubecl::Device::Wgpu(_)) => Kernels::Cube,
        DispatchDevice::Autodiff(_) => match device.clone().without_autodiff().as_dispatch() {
            DispatchDevice::Cube(cubecl::Device::Wgpu(_)) => Kernels::Cube,
            _ => Kernels::Burn,
        },
        _ => Kernels::Burn,
    }
}

/// The operations graft adds to Flex. An optional operand that is absent travels as a tensor with
/// no elements (see [`absent`]), since the extension macro passes tensors, not options.
#[backend_extension(Flex)]
pub trait FusedOps: Backend {
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
    fn linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        into: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    fn add_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn feed_forward(
        x: FloatTensor<Self>,
        up_weight: FloatTensor<Self>,
        up_bias: FloatTensor<Self>,
        down_weight: FloatTensor<Self>,
        down_bias: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn self_attention(
        x: FloatTensor<Self>,
        query_weight: FloatTensor<Self>,
        query_bias: FloatTensor<Self>,
        key_weight: FloatTensor<Self>,
        key_bias: FloatTensor<Self>,
        value_weight: FloatTensor<Self>,
        value_bias: FloatTensor<Self>,
        output_weight: FloatTensor<Self>,
        output_bias: FloatTensor<Self>,
        heads: usize,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    #[allow(clippy::too_many_arguments)]
    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
}

/// The kernels are f32 only; anything else (half precision, quantized weights) takes burn's ops.
fn all_f32(dtypes: &[Option<DType>]) -> bool {
    dtypes.iter().flatten().all(|&dtype| dtype == DType::F32)
}

/// The kernels for operands of `dtypes` on `device`: burn's ops unless all are f32.
fn kernels_for(device: &Device, dtypes: &[Option<DType>]) -> Kernels {
    if all_f32(dtypes) {
        kernels(device)
    } else {
        Kernels::Burn
    }
}

/// An optional operand for [`FusedOps`]: the tensor, or one with no elements on `device`.
fn operand<const D: usize, K: burn::tensor::kind::Basic>(
    tensor: Option<Tensor<D, K>>,
    device: &Device,
) -> burn::backend::DispatchTensor {
    tensor
        .unwrap_or_else(|| Tensor::empty([0; D], device))
        .into_dispatch()
}

/// The Flex side of [`operand`]: `None` for the stand-in with no elements.
fn absent(t: FlexTensor) -> Option<FlexTensor> {
    (t.layout().num_elements() > 0).then_some(t)
}

/// Exact GELU of `x + bias` (bias over the last dimension).
pub fn gelu<const D: usize>(x: Tensor<D>, bias: Option<Tensor<1>>) -> Tensor<D> {
    let dtypes = [Some(x.dtype()), bias.as_ref().map(Tensor::dtype)];
    let device = x.device();
    let kernels = kernels_for(&device, &dtypes);
    if kernels != Kernels::Burn {
        let (x, bias) = (x.into_dispatch(), operand(bias, &device));
        let out = if kernels == Kernels::Flex {
            <Dispatch as FusedOps>::bias_gelu(x, bias)
        } else {
            <Dispatch as CubeFusedOps>::bias_gelu(x, bias)
        };
        return Tensor::from_dispatch(out);
    }
    let x = match bias {
        Some(bias) => x + bias.unsqueeze(),
        None => x,
    };
    activation::gelu(x)
}

/// `x · weight + bias` with `weight` as burn's `Linear` stores it, `[d_in, d_out]`.
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    linear_into(x, weight, bias, None)
}

/// `into + x · weight + bias`: [`linear`] accumulated into `into` (a residual, say), whose buffer
/// takes the result when nothing else holds it, so no new buffer is allocated.
pub fn linear_add<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    into: Tensor<D>,
) -> Tensor<D> {
    linear_into(x, weight, bias, Some(into))
}

fn linear_into<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    into: Option<Tensor<D>>,
) -> Tensor<D> {
    let dtypes = [
        Some(x.dtype()),
        Some(weight.dtype()),
        bias.as_ref().map(Tensor::dtype),
        into.as_ref().map(Tensor::dtype),
    ];
    if kernels_for(&x.device(), &dtypes) == Kernels::Flex && D >= 2 {
        let device = x.device();
        let out = <Dispatch as FusedOps>::linear(
            x.into_dispatch(),
            weight.into_dispatch(),
            operand(bias, &device),
            operand(into, &device),
        );
        return Tensor::from_dispatch(out);
    }
    let product = module::linear(x, weight, bias);
    match into {
        Some(into) => into + product,
        None => product,
    }
}

/// `LayerNorm(x + bias + residual)` over the last dimension, as `torch.nn.LayerNorm` computes it.
pub fn add_layer_norm<const D: usize>(
    x: Tensor<D>,
    bias: Option<Tensor<1>>,
    residual: Option<Tensor<D>>,
    gamma: Tensor<1>,
    beta: Option<Tensor<1>>,
    epsilon: f64,
) -> Tensor<D> {
    let dtypes = [
        Some(x.dtype()),
        bias.as_ref().map(Tensor::dtype),
        residual.as_ref().map(Tensor::dtype),
        Some(gamma.dtype()),
        beta.as_ref().map(Tensor::dtype),
    ];
    let device = x.device();
    let kernels = kernels_for(&device, &dtypes);
    if kernels != Kernels::Burn {
        let (x, bias, residual, gamma, beta) = (
            x.into_dispatch(),
            operand(bias, &device),
            operand(residual, &device),
            gamma.into_dispatch(),
            operand(beta, &device),
        );
        let out = if kernels == Kernels::Flex {
            <Dispatch as FusedOps>::add_layer_norm(x, bias, residual, gamma, beta, epsilon)
        } else {
            <Dispatch as CubeFusedOps>::add_layer_norm(x, bias, residual, gamma, beta, epsilon)
        };
        return Tensor::from_dispatch(out);
    }
    let mut x = x;
    if let Some(bias) = bias {
        x = x + bias.unsqueeze();
    }
    if let Some(residual) = residual {
        x = x + residual;
    }
    module::layer_norm(x, gamma, beta, epsilon)
}

/// A dense layer as [`feed_forward`] takes it: burn's `Linear` weight `[d_in, d_out]` and bias.
pub struct Dense {
    pub weight: Tensor<2>,
    pub bias: Option<Tensor<1>>,
}

/// A layer norm's parameters as [`feed_forward`] takes them.
pub struct LayerNormParams {
    pub gamma: Tensor<1>,
    pub beta: Option<Tensor<1>>,
    pub epsilon: f64,
}

/// The feed-forward block of a post-norm encoder layer with exact GELU (BERT's intermediate and
/// output): `LayerNorm(x + GELU(x·up + up.bias)·down + down.bias)`. On the fused kernels the
/// result is written over `x`'s buffer (copied first only when shared) a chunk of rows at a time,
/// never holding the whole `[rows, intermediate]` activation.
pub fn feed_forward<const D: usize>(
    x: Tensor<D>,
    up: Dense,
    down: Dense,
    norm: LayerNormParams,
) -> Tensor<D> {
    let dtypes = [
        Some(x.dtype()),
        Some(up.weight.dtype()),
        up.bias.as_ref().map(Tensor::dtype),
        Some(down.weight.dtype()),
        down.bias.as_ref().map(Tensor::dtype),
        Some(norm.gamma.dtype()),
        norm.beta.as_ref().map(Tensor::dtype),
    ];
    if kernels_for(&x.device(), &dtypes) == Kernels::Flex && D >= 2 {
        let device = x.device();
        let out = <Dispatch as FusedOps>::feed_forward(
            x.into_dispatch(),
            up.weight.into_dispatch(),
            operand(up.bias, &device),
            down.weight.into_dispatch(),
            operand(down.bias, &device),
            norm.gamma.into_dispatch(),
            operand(norm.beta, &device),
            norm.epsilon,
        );
        return Tensor::from_dispatch(out);
    }
    // Elsewhere: burn's matmul between the public GELU and layer norm, which run the Cube
    // kernels on wgpu and burn's ops otherwise.
    let inner = gelu(module::linear(x.clone(), up.weight, None), up.bias);
    let y = module::linear(inner, down.weight, None);
    add_layer_norm(y, down.bias, Some(x), norm.gamma, norm.beta, norm.epsilon)
}

/// A post-norm encoder layer's self-attention: its four `[hidden, hidden]` projections and heads.
pub struct SelfAttention {
    pub query: Dense,
    pub key: Dense,
    pub value: Dense,
    pub output: Dense,
    pub heads: usize,
}

/// The self-attention block of a post-norm encoder layer (BERT's attention and its output):
/// `LayerNorm(x + Attention(x·W_q + b_q, x·W_k + b_k, x·W_v + b_v)·W_o + b_o)`, with scores
/// scaled by `1/sqrt(head_dim)`, and `mask` and `bias` as [`attention`] takes them. On the fused kernels the
/// result is written over `x`'s buffer (copied first only when shared) a few whole sequences at a
/// time, never holding the whole `[rows, 3·hidden]` projection.
pub fn self_attention(
    x: Tensor<3>,
    layer: SelfAttention,
    mask: Option<Tensor<4, Bool>>,
    bias: Option<Tensor<4>>,
    norm: LayerNormParams,
) -> Tensor<3> {
    let denses = [&layer.query, &layer.key, &layer.value, &layer.output];
    let dtypes: Vec<Option<DType>> = [Some(x.dtype()), Some(norm.gamma.dtype())]
        .into_iter()
        .chain(
            denses
                .iter()
                .flat_map(|d| [Some(d.weight.dtype()), d.bias.as_ref().map(Tensor::dtype)]),
        )
        .chain([
            norm.beta.as_ref().map(Tensor::dtype),
            bias.as_ref().map(Tensor::dtype),
        ])
        .collect();
    if kernels_for(&x.device(), &dtypes) == Kernels::Flex {
        let device = x.device();
        let SelfAttention {
            query,
            key,
            value,
            output,
            heads,
        } = layer;
        let out = <Dispatch as FusedOps>::self_attention(
            x.into_dispatch(),
            query.weight.into_dispatch(),
            operand(query.bias, &device),
            key.weight.into_dispatch(),
            operand(key.bias, &device),
            value.weight.into_dispatch(),
            operand(value.bias, &device),
            output.weight.into_dispatch(),
            operand(output.bias, &device),
            heads,
            operand(mask, &device),
            operand(bias, &device),
            norm.gamma.into_dispatch(),
            operand(norm.beta, &device),
            norm.epsilon,
        );
        return Tensor::from_dispatch(out);
    }
    let project = |dense: Dense, x: Tensor<3>| module::linear(x, dense.weight, dense.bias);
    let q = project(layer.query, x.clone());
    let k = project(layer.key, x.clone());
    let v = project(layer.value, x.clone());
    // Elsewhere: burn's matmuls around the public attention and layer norm, which run the
    // Cube kernels on wgpu and burn's ops otherwise.
    let context = attention(q, k, v, layer.heads, mask, bias, None);
    let y = module::linear(context, layer.output.weight, None);
    add_layer_norm(
        y,
        layer.output.bias,
        Some(x),
        norm.gamma,
        norm.beta,
        norm.epsilon,
    )
}

/// Scaled dot-product attention over queries `[batch, seq_q, heads·head_dim]` and keys and values
/// `[batch, seq_k, heads·head_dim]`, giving `[batch, seq_q, heads·head_dim]`. `mask`
/// (`[batch, heads, seq_q, seq_k]`, broadcast views welcome) is true where a key may not be seen;
/// `bias` is added to the scores; `scale` multiplies them (default `1/sqrt(head_dim)`).
pub fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    mask: Option<Tensor<4, Bool>>,
    bias: Option<Tensor<4>>,
    scale: Option<f64>,
) -> Tensor<3> {
    let [batch, seq_q, width] = q.dims();
    let seq_k = k.dims()[1];
    let head_dim = width / heads;
    let scale = scale.unwrap_or(1.0 / (head_dim as f64).sqrt());
    let dtypes = [
        Some(q.dtype()),
        Some(k.dtype()),
        Some(v.dtype()),
        bias.as_ref().map(Tensor::dtype),
    ];
    let device = q.device();
    let kernels = kernels_for(&device, &dtypes);
    if kernels != Kernels::Burn {
        let (q, k, v) = (q.into_dispatch(), k.into_dispatch(), v.into_dispatch());
        let (mask, bias) = (operand(mask, &device), operand(bias, &device));
        let out = if kernels == Kernels::Flex {
            <Dispatch as FusedOps>::attention(q, k, v, heads, mask, bias, scale)
        } else {
            <Dispatch as CubeFusedOps>::attention(q, k, v, mask, bias, heads, scale)
        };
        return Tensor::from_dispatch(out);
    }
    let split = |x: Tensor<3>, seq: usize| x.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
    let options = AttentionModuleOptions {
        scale: Some(scale),
        ..Default::default()
    };
    let context = module::attention(
        split(q, seq_q),
        split(k, seq_k),
        split(v, seq_k),
        mask,
        bias,
        options,
    );
    context.swap_dims(1, 2).reshape([batch, seq_q, width])
}

// ---------------------------------------------------------------------------------------------
// Flex implementations.

/// `t` in row-major order covering its whole buffer (so `storage_mut` is exactly its elements,
/// copied first only when another tensor shares the buffer), copied only when its layout needs it.
fn contiguous(t: FlexTensor) -> FlexTensor {
    let t = t.to_contiguous();
    assert_eq!(
        t.dtype(),
        DType::F32,
        "graft's fused kernels take f32 tensors"
    );
    t
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn from_vec(data: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

impl FusedOps for Flex {
    fn bias_gelu(x: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let mut x = contiguous(x);
        let bias = absent(bias).map(contiguous);
        math::bias_gelu_in_place(x.storage_mut::<f32>(), bias.as_ref().map(f32s));
        x
    }

    fn linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, into: FlexTensor) -> FlexTensor {
        let x = contiguous(x);
        let dims = x.layout().shape().clone();
        let d_in = dims[dims.num_dims() - 1];
        let rows = x.layout().num_elements() / d_in.max(1);
        let weight = weight_tensor(weight);
        let weight = weight_view(&weight);
        assert_eq!(
            weight.d_in, d_in,
            "linear: the weight takes {} inputs, the input has {d_in}",
            weight.d_in
        );
        let d_out = weight.d_out;
        let bias = absent(bias).map(contiguous);
        let parallelism = dense::parallelism(rows, &weight);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dimension") = d_out;
        let add_bias = |out: &mut [f32]| {
            if let Some(bias) = &bias {
                math::add_bias_in_place(out, f32s(bias));
            }
        };
        if let Some(into) = absent(into) {
            let mut into = contiguous(into);
            assert_eq!(
                into.layout().shape().to_vec(),
                out_dims,
                "linear: the output does not match the tensor it is added to"
            );
            let out = into.storage_mut::<f32>();
            // SAFETY: `out` holds rows · d_out elements.
            unsafe { weight.product(f32s(&x), rows, out.as_mut_ptr(), true, parallelism) };
            add_bias(out);
            return into;
        }
        let mut out: Vec<f32> = Vec::with_capacity(rows * d_out);
        // SAFETY: `out` has room for rows · d_out, which the product writes in full.
        unsafe {
            weight.product(f32s(&x), rows, out.as_mut_ptr(), false, parallelism);
            out.set_len(rows * d_out);
        }
        add_bias(&mut out);
        from_vec(out, Shape::from(out_dims))
    }

    fn feed_forward(
        x: FlexTensor,
        up_weight: FlexTensor,
        up_bias: FlexTensor,
        down_weight: FlexTensor,
        down_bias: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let mut x = contiguous(x);
        let (up_weight, down_weight) = (weight_tensor(up_weight), weight_tensor(down_weight));
        let (up_bias, down_bias) = (
            absent(up_bias).map(contiguous),
            absent(down_bias).map(contiguous),
        );
        let (gamma, beta) = (contiguous(gamma), absent(beta).map(contiguous));
        let up = dense::Dense {
            weight: weight_view(&up_weight),
            bias: up_bias.as_ref().map(f32s),
        };
        let down = dense::Dense {
            weight: weight_view(&down_weight),
            bias: down_bias.as_ref().map(f32s),
        };
        let norm = norm::Norm {
            gamma: f32s(&gamma),
            beta: beta.as_ref().map(f32s),
            epsilon: epsilon as f32,
        };
        feed_forward::feed_forward_in_place(x.storage_mut::<f32>(), up, down, norm);
        x
    }

    fn add_layer_norm(
        x: FlexTensor,
        bias: FlexTensor,
        residual: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let mut x = contiguous(x);
        let bias = absent(bias).map(contiguous);
        let residual = absent(residual).map(contiguous);
        let (gamma, beta) = (contiguous(gamma), absent(beta).map(contiguous));
        let norm = norm::Norm {
            gamma: f32s(&gamma),
            beta: beta.as_ref().map(f32s),
            epsilon: epsilon as f32,
        };
        norm::add_layer_norm_in_place(
            x.storage_mut::<f32>(),
            bias.as_ref().map(f32s),
            residual.as_ref().map(f32s),
            norm,
        );
        x
    }

    fn self_attention(
        x: FlexTensor,
        query_weight: FlexTensor,
        query_bias: FlexTensor,
        key_weight: FlexTensor,
        key_bias: FlexTensor,
        value_weight: FlexTensor,
        value_bias: FlexTensor,
        output_weight: FlexTensor,
        output_bias: FlexTensor,
        heads: usize,
        mask: FlexTensor,
        bias: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> FlexTensor {
        let [batch, seq, width] = dims3(&x);
        let mut x = contiguous(x);
        let weights = [query_weight, key_weight, value_weight, output_weight].map(weight_tensor);
        let biases =
            [query_bias, key_bias, value_bias, output_bias].map(|b| absent(b).map(contiguous));
        let dense = |i: usize| dense::Dense {
            weight: weight_view(&weights[i]),
            bias: biases[i].as_ref().map(f32s),
        };
        let projections = self_attention::Projections {
            query: dense(0),
            key: dense(1),
            value: dense(2),
            output: dense(3),
        };
        let views = ScoreViews::new(mask, bias, [batch, heads, seq, seq]);
        let terms = views.terms();
        let (gamma, beta) = (contiguous(gamma), absent(beta).map(contiguous));
        let norm = norm::Norm {
            gamma: f32s(&gamma),
            beta: beta.as_ref().map(f32s),
            epsilon: epsilon as f32,
        };
        let scale = (1.0 / ((width / heads.max(1)) as f64).sqrt()) as f32;
        self_attention::self_attention_in_place(
            x.storage_mut::<f32>(),
            batch,
            heads,
            projections,
            terms,
            scale,
            norm,
        );
        x
    }

    fn attention(
        q: FlexTensor,
        k: FlexTensor,
        v: FlexTensor,
        heads: usize,
        mask: FlexTensor,
        bias: FlexTensor,
        scale: f64,
    ) -> FlexTensor {
        let [batch, seq_q, width] = dims3(&q);
        let seq_k = dims3(&k)[1];
        let (q, k, v) = (rows_view(q), rows_view(k), rows_view(v));
        let shape = attention::Shape {
            batch,
            heads,
            seq_q,
            seq_k,
            head_dim: width / heads,
        };
        let views = ScoreViews::new(mask, bias, [batch, heads, seq_q, seq_k]);
        let terms = views.terms();
        let mut out = Vec::new();
        attention::attention(
            q.heads(),
            k.heads(),
            v.heads(),
            shape,
            scale as f32,
            terms,
            &mut out,
        );
        from_vec(out, Shape::new([batch, seq_q, width]))
    }
}

/// A 2-D f32 weight whose strides the gemm can walk from its offset (copied if any is negative).
fn weight_tensor(t: FlexTensor) -> FlexTensor {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "graft's fused kernels take f32 tensors"
    );
    assert_eq!(t.layout().shape().num_dims(), 2, "a dense weight is 2-D");
    if t.layout().strides().iter().all(|&s| s >= 0) {
        t
    } else {
        t.to_contiguous()
    }
}

/// The gemm's view of a tensor from [`weight_tensor`].
fn weight_view(t: &FlexTensor) -> dense::Weight<'_> {
    let layout = t.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    dense::Weight {
        data: &t.storage::<f32>()[layout.start_offset()..],
        d_in: shape[0],
        d_out: shape[1],
        row_stride: strides[0],
        col_stride: strides[1],
    }
}

fn dims3(t: &FlexTensor) -> [usize; 3] {
    let shape = t.layout().shape();
    assert_eq!(
        shape.num_dims(),
        3,
        "attention takes [batch, seq, width] tensors"
    );
    [shape[0], shape[1], shape[2]]
}

/// A `[batch, seq, width]` tensor whose rows are contiguous (a view of a wider product is kept).
struct RowsView {
    tensor: FlexTensor,
    offset: usize,
    batch_stride: usize,
    seq_stride: usize,
}

impl RowsView {
    fn heads(&self) -> attention::Heads<'_> {
        attention::Heads {
            data: self.tensor.storage::<f32>(),
            offset: self.offset,
            batch_stride: self.batch_stride,
            seq_stride: self.seq_stride,
        }
    }
}

fn rows_view(t: FlexTensor) -> RowsView {
    assert_eq!(
        t.dtype(),
        DType::F32,
        "graft's fused kernels take f32 tensors"
    );
    let layout = t.layout();
    let strides = layout.strides();
    let positive = strides.iter().all(|&s| s >= 0);
    if positive && strides[2] == 1 {
        let (offset, batch_stride, seq_stride) = (
            layout.start_offset(),
            strides[0] as usize,
            strides[1] as usize,
        );
        return RowsView {
            tensor: t,
            offset,
            batch_stride,
            seq_stride,
        };
    }
    let t = contiguous(t);
    let [_, seq, width] = dims3(&t);
    RowsView {
        tensor: t,
        offset: 0,
        batch_stride: seq * width,
        seq_stride: width,
    }
}

/// The optional mask and bias of the attention scores, each broadcast to `[batch, heads, seq_q,
/// seq_k]` (see [`broadcast_view`]).
struct ScoreViews {
    mask: Option<(FlexTensor, usize, [usize; 4])>,
    bias: Option<(FlexTensor, usize, [usize; 4])>,
}

impl ScoreViews {
    fn new(mask: FlexTensor, bias: FlexTensor, dims: [usize; 4]) -> Self {
        Self {
            mask: absent(mask).map(|m| broadcast_view(m, dims)),
            bias: absent(bias).map(|b| broadcast_view(b, dims)),
        }
    }

    fn terms(&self) -> attention::ScoreTerms<'_> {
        attention::ScoreTerms {
            mask: self
                .mask
                .as_ref()
                .map(|(t, offset, strides)| attention::Strided {
                    data: t.storage::<u8>(),
                    offset: *offset,
                    strides: *strides,
                }),
            bias: self
                .bias
                .as_ref()
                .map(|(t, offset, strides)| attention::Strided {
                    data: t.storage::<f32>(),
                    offset: *offset,
                    strides: *strides,
                }),
        }
    }
}

/// A 4-D term's storage, offset and strides over `dims` (0 where it broadcasts).
fn broadcast_view(t: FlexTensor, dims: [usize; 4]) -> (FlexTensor, usize, [usize; 4]) {
    let t = if t.layout().strides().iter().all(|&s| s >= 0) {
        t
    } else {
        t.to_contiguous()
    };
    let layout = t.layout();
    let shape = layout.shape();
    assert_eq!(shape.num_dims(), 4, "attention masks and biases are 4-D");
    let mut strides = [0usize; 4];
    for d in 0..4 {
        assert!(
            shape[d] == dims[d] || shape[d] == 1,
            "attention term of shape {shape:?} does not broadcast to {dims:?}"
        );
        strides[d] = if shape[d] == 1 {
            0
        } else {
            layout.strides()[d] as usize
        };
    }
    let offset = layout.start_offset();
    (t, offset, strides)
}

/// CPU threads the kernels (and Flex's gemm) use: rayon's global pool.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Sizes rayon's global pool; only possible before its first use.
pub fn set_threads(threads: usize) -> Result<(), String> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .map_err(|e| format!("cannot set {threads} threads: {e}"))
}
