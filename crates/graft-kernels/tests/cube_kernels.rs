//! The Cube (wgpu) kernels against burn's own ops: each public function on a wgpu device must
//! give what the same call gives on NdArray (burn's ops), forward, and under autodiff the same
//! gradients of a scalar loss with respect to every input (wgpu autodiff against NdArray
//! autodiff). Shapes are small: in CI wgpu is Mesa's software Vulkan. The suite also checks that
//! the Cube kernels, not burn's ops, ran on wgpu.

#![allow(deprecated)] // NdArray is one of graft's backends

use std::sync::OnceLock;

use burn::backend::wgpu::WgpuInitError;
use burn::tensor::{Bool, Device, Tensor, TensorData};
use graft_kernels::{Dense, LayerNormParams, SelfAttention};

/// The wgpu device, started once for the whole binary; `None` (with a message) only when this
/// machine has no wgpu adapter at all.
fn wgpu() -> Option<Device> {
    static DEVICE: OnceLock<Option<Device>> = OnceLock::new();
    DEVICE
        .get_or_init(|| match Device::wgpu_options().init() {
            Ok(device) => Some(device),
            Err(error @ WgpuInitError::AdapterUnavailable { .. }) => {
                eprintln!("no wgpu adapter ({error}): skipping the Cube kernel checks");
                None
            }
            Err(error) => panic!("wgpu did not start: {error}"),
        })
        .clone()
}

/// `n` deterministic values in [-2, 2): the fractional parts of `(i + seed)·φ`, scrambled by a
/// multiplicative hash so that neighbours differ.
fn values(n: usize, seed: u32) -> Vec<f32> {
    let golden = 0.618_034_f64;
    (0..n as u64)
        .map(|i| {
            let hashed = (i + u64::from(seed) * 7_919).wrapping_mul(2_654_435_761) % 1_000_003;
            ((hashed as f64 * golden).fract() * 4.0 - 2.0) as f32
        })
        .collect()
}

/// A flat leaf of `n` values; the forward functions reshape it.
fn leaf(n: usize, seed: u32) -> TensorData {
    TensorData::new(values(n, seed), [n])
}

/// An op under test: it takes the leaves (flat) on a device and returns a 3-D output.
type Forward<'a> = &'a dyn Fn(&[Tensor<1>], &Device) -> Tensor<3>;

/// The output on `device` and, when it records gradients, the gradient of
/// `Σ output · weights` (fixed pseudo-random weights) with respect to every leaf.
fn run(device: &Device, leaves: &[TensorData], forward: Forward) -> (Vec<f32>, Vec<Vec<f32>>) {
    let leaves: Vec<Tensor<1>> = leaves
        .iter()
        .map(|data| {
            let t = Tensor::from_data(data.clone(), device);
            if device.is_autodiff() {
                t.require_grad()
            } else {
                t
            }
        })
        .collect();
    let out = forward(&leaves, device);
    let flat = |t: Tensor<3>| t.into_data().to_vec::<f32>().expect("f32 data");
    if !device.is_autodiff() {
        return (flat(out), Vec::new());
    }
    let dims = out.dims();
    let weights = Tensor::<1>::from_data(leaf(dims.iter().product(), 99), device).reshape(dims);
    let grads = total(out.clone() * weights).backward();
    let grads = leaves
        .iter()
        .map(|leaf| {
            let grad = leaf.grad(&grads).expect("every leaf gets a gradient");
            grad.into_data().to_vec::<f32>().expect("f32 data")
        })
        .collect();
    (flat(out), grads)
}

/// The sum of all elements, as one sum along a flattened dimension: burn's whole-tensor `sum`
/// autotunes cubek's `shared_sum` (workgroup memory and atomics), whose SPIR-V Mesa 22.3's
/// software Vulkan (lavapipe) crashes compiling.
fn total<const D: usize>(t: Tensor<D>) -> Tensor<1> {
    let n = t.shape().num_elements();
    t.reshape([n]).sum_dim(0)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    (a.iter().zip(b)).fold(0.0, |worst: f32, (x, y)| worst.max((x - y).abs()))
}

/// Runs `forward` on wgpu and on NdArray, without and with autodiff, and checks the outputs
/// (within `forward_tolerance`) and every leaf's gradient (within `grad_tolerance`) agree.
fn agree(
    what: &str,
    leaves: &[TensorData],
    forward: Forward,
    forward_tolerance: f32,
    grad_tolerance: f32,
) {
    agree_with(
        what,
        leaves,
        forward,
        forward,
        forward_tolerance,
        grad_tolerance,
    );
}

/// [`agree`] with the NdArray side computed by `reference` instead of `forward`.
fn agree_with(
    what: &str,
    leaves: &[TensorData],
    forward: Forward,
    reference: Forward,
    forward_tolerance: f32,
    grad_tolerance: f32,
) {
    let Some(device) = wgpu() else { return };
    let before = graft_kernels::cube::launches();
    let (fused, _) = run(&device, leaves, forward);
    let (expected, _) = run(&Device::ndarray(), leaves, reference);
    let diff = max_diff(&fused, &expected);
    eprintln!("{what}: forward max |wgpu − ndarray| = {diff:e}");
    assert!(
        diff <= forward_tolerance,
        "{what}: forward differs by {diff:e}"
    );

    let (reference_out, reference_grads) = run(&Device::ndarray().autodiff(), leaves, reference);
    // Training, with and without gradient checkpointing (the fused steps are compute-bound, so
    // checkpointing keeps their saved tensors rather than recomputing them).
    let training = device.clone().autodiff();
    for (mode, device) in [
        ("", training.clone()),
        (", checkpointed", training.gradient_checkpointing()),
    ] {
        let (fused_out, fused_grads) = run(&device, leaves, forward);
        let diff = max_diff(&fused_out, &reference_out);
        assert!(
            diff <= forward_tolerance,
            "{what}{mode}: autodiff forward differs by {diff:e}"
        );
        for (i, (fused, expected)) in fused_grads.iter().zip(&reference_grads).enumerate() {
            let diff = max_diff(fused, expected);
            eprintln!("{what}{mode}: gradient of leaf {i} max |wgpu − ndarray| = {diff:e}");
            assert!(
                diff <= grad_tolerance,
                "{what}{mode}: gradient of leaf {i} differs by {diff:e}"
            );
        }
    }
    assert!(
        graft_kernels::cube::launches() > before,
        "{what}: no Cube kernel ran on wgpu"
    );
}

#[test]
fn the_cube_kernels_serve_wgpu_with_and_without_autodiff() {
    assert_eq!(graft_kernels::kernel_for(&Device::flex()), "flex");
    assert_eq!(
        graft_kernels::kernel_for(&Device::flex().autodiff()),
        "burn"
    );
    assert_eq!(graft_kernels::kernel_for(&Device::ndarray()), "burn");
    let Some(device) = wgpu() else { return };
    assert_eq!(graft_kernels::kernel_for(&device), "cube");
    assert_eq!(
        graft_kernels::kernel_for(&device.clone().autodiff()),
        "cube"
    );
    assert!(graft_kernels::serves(&device.clone().autodiff()));

    // The counter moves only when a Cube kernel is launched (not when burn's ops run): once for
    // the forward GELU, and again for its backward kernel under autodiff.
    let x = leaf(64, 1);
    let before = graft_kernels::cube::launches();
    let out = graft_kernels::gelu(Tensor::<1>::from_data(x.clone(), &device), None);
    out.into_data();
    let after_forward = graft_kernels::cube::launches();
    assert!(
        after_forward > before,
        "the forward GELU did not run the Cube kernel"
    );
    let training = device.clone().autodiff();
    let x = Tensor::<1>::from_data(x, &training).require_grad();
    let grads = total(graft_kernels::gelu(x.clone(), None)).backward();
    x.grad(&grads).expect("a gradient").into_data();
    assert!(
        graft_kernels::cube::launches() >= after_forward + 2,
        "training did not run the Cube forward and backward kernels"
    );
}

/// Exact GELU of `x + bias` in burn's primitive ops. burn's own `gelu` differentiates the tanh
/// approximation (its `gelu_backward`), about 1e-3 off the exact derivative, so the reference
/// gradients come from differentiating `erf` instead.
fn exact_gelu(x: Tensor<3>, bias: Option<Tensor<1>>) -> Tensor<3> {
    let u = match bias {
        Some(bias) => x + bias.unsqueeze(),
        None => x,
    };
    u.clone() * ((u * std::f32::consts::FRAC_1_SQRT_2).erf() + 1.0) * 0.5
}

#[test]
fn gelu_with_and_without_bias() {
    let width = 37;
    let leaves = [leaf(15 * width, 2), leaf(width, 3)];
    let x = |t: &[Tensor<1>]| t[0].clone().reshape([3, 5, width]);
    agree_with(
        "gelu + bias",
        &leaves,
        &|t, _| graft_kernels::gelu(x(t), Some(t[1].clone())),
        &|t, _| exact_gelu(x(t), Some(t[1].clone())),
        1e-5,
        1e-5,
    );
    agree_with(
        "gelu",
        &leaves[..1],
        &|t, _| graft_kernels::gelu(x(t), None),
        &|t, _| exact_gelu(x(t), None),
        1e-5,
        1e-5,
    );
}

#[test]
fn layer_norm_of_bias_and_residual() {
    let (batch, seq, width) = (4, 6, 48);
    let n = batch * seq * width;
    let leaves = [
        leaf(n, 4),
        leaf(width, 5),
        leaf(n, 6),
        leaf(width, 7),
        leaf(width, 8),
    ];
    agree(
        "bias + residual + layer norm",
        &leaves,
        &|t, _| {
            graft_kernels::add_layer_norm(
                t[0].clone().reshape([batch, seq, width]),
                Some(t[1].clone()),
                Some(t[2].clone().reshape([batch, seq, width])),
                t[3].clone(),
                Some(t[4].clone()),
                1e-12,
            )
        },
        1e-5,
        1e-5,
    );
    agree(
        "plain layer norm",
        &[leaves[0].clone(), leaves[3].clone()],
        &|t, _| {
            let x = t[0].clone().reshape([batch, seq, width]);
            graft_kernels::add_layer_norm(x, None, None, t[1].clone(), None, 1e-5)
        },
        1e-5,
        1e-5,
    );
}

/// The `[batch, heads, seq_q, seq_k]` padding mask the encoders pass: true where the key is past
/// the sequence's length, as a broadcast view of one row per sequence.
fn padding_mask(
    lengths: &[usize],
    heads: usize,
    seq_q: usize,
    seq_k: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let batch = lengths.len();
    let padded = lengths
        .iter()
        .flat_map(|&len| (0..seq_k).map(move |j| j >= len));
    let padded = TensorData::new(padded.collect::<Vec<bool>>(), [batch, 1, 1, seq_k]);
    Tensor::<4, Bool>::from_data(padded, device).expand([batch, heads, seq_q, seq_k])
}

/// One attention case: Q, K and V are narrow views of one `[batch, seq, 3·width]` product
/// (leaf 0); the score bias (leaf 1, `[1, heads, seq, seq]` broadcast over the batch) is used
/// when `biased`; keys past each sequence's length are masked when `lengths` is given.
struct AttentionCase {
    batch: usize,
    seq: usize,
    heads: usize,
    head_dim: usize,
}

impl AttentionCase {
    fn leaves(&self, seed: u32) -> [TensorData; 2] {
        let width = self.heads * self.head_dim;
        let scores = self.heads * self.seq * self.seq;
        [
            leaf(self.batch * self.seq * 3 * width, seed),
            leaf(scores, seed + 1),
        ]
    }

    fn check(&self, what: &str, lengths: Option<&[usize]>, biased: bool, seed: u32) {
        let Self {
            batch,
            seq,
            heads,
            head_dim,
        } = *self;
        let width = heads * head_dim;
        let leaves = self.leaves(seed);
        let leaves = if biased { &leaves[..] } else { &leaves[..1] };
        let forward = |t: &[Tensor<1>], device: &Device| {
            let qkv = t[0].clone().reshape([batch, seq, 3 * width]);
            let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(2, i * width, width));
            let mask = lengths.map(|lengths| padding_mask(lengths, heads, seq, seq, device));
            let bias = biased.then(|| {
                t[1].clone()
                    .reshape([1, heads, seq, seq])
                    .expand([batch, heads, seq, seq])
            });
            graft_kernels::attention(q, k, v, heads, mask, bias, None)
        };
        agree(what, leaves, &forward, 1e-5, 1e-5);
    }
}

#[test]
fn attention_with_head_dim_8_over_odd_lengths() {
    // 37 keys: two key blocks, the last one short; three sequences, keys past 20 and past 5 padded.
    let case = AttentionCase {
        batch: 3,
        seq: 37,
        heads: 4,
        head_dim: 8,
    };
    let lengths = [37, 20, 5];
    case.check("attention d=8", None, false, 10);
    case.check("attention d=8, padded", Some(&lengths), false, 12);
    case.check("attention d=8, biased", None, true, 14);
    case.check("attention d=8, padded and biased", Some(&lengths), true, 16);
}

#[test]
fn attention_with_head_dim_32_over_several_key_blocks() {
    // 70 keys: three online-softmax blocks of 32, the last one short.
    let case = AttentionCase {
        batch: 2,
        seq: 70,
        heads: 2,
        head_dim: 32,
    };
    let lengths = [70, 33];
    case.check("attention d=32, padded", Some(&lengths), false, 20);
    case.check(
        "attention d=32, padded and biased",
        Some(&lengths),
        true,
        22,
    );
}

#[test]
fn cross_attention_with_fewer_queries_than_keys() {
    // 9 queries over 37 keys, K and V views of one `[batch, 37, 2·width]` product, padded and
    // biased, with a scale of its own.
    let (batch, seq_q, seq_k, heads, head_dim) = (2, 9, 37, 2, 8);
    let width = heads * head_dim;
    let leaves = [
        leaf(batch * seq_q * width, 70),
        leaf(batch * seq_k * 2 * width, 71),
        leaf(heads * seq_q * seq_k, 72),
    ];
    agree(
        "cross-attention, padded and biased",
        &leaves,
        &|t, device| {
            let q = t[0].clone().reshape([batch, seq_q, width]);
            let kv = t[1].clone().reshape([batch, seq_k, 2 * width]);
            let (k, v) = (kv.clone().narrow(2, 0, width), kv.narrow(2, width, width));
            let mask = padding_mask(&[seq_k, 12], heads, seq_q, seq_k, device);
            let bias = t[2]
                .clone()
                .reshape([1, heads, seq_q, seq_k])
                .expand([batch, heads, seq_q, seq_k]);
            graft_kernels::attention(q, k, v, heads, Some(mask), Some(bias), Some(0.3))
        },
        1e-5,
        1e-5,
    );
}

#[test]
fn a_fully_masked_sequence_attends_uniformly_as_on_flex() {
    // burn's own attention gives 0 for a row with every key masked; graft's kernels, Flex and
    // Cube alike, fill masked scores with f32::MIN and so average the values uniformly.
    let Some(device) = wgpu() else { return };
    let (batch, seq, heads, head_dim) = (2, 9, 2, 8);
    let width = heads * head_dim;
    let qkv = TensorData::new(values(batch * seq * 3 * width, 30), [batch, seq, 3 * width]);
    let on = |device: &Device| {
        let qkv = Tensor::<3>::from_data(qkv.clone(), device);
        let [q, k, v] = [0, 1, 2].map(|i| qkv.clone().narrow(2, i * width, width));
        let mask = padding_mask(&[seq, 0], heads, seq, seq, device);
        graft_kernels::attention(q, k, v, heads, Some(mask), None, None)
            .into_data()
            .to_vec::<f32>()
            .expect("f32 data")
    };
    let diff = max_diff(&on(&device), &on(&Device::flex()));
    assert!(
        diff <= 1e-5,
        "fully masked rows: wgpu differs from Flex by {diff:e}"
    );
}

/// `[d_in, d_out]` weights and biases of `dense` from the leaves from `first` on.
fn dense(t: &[Tensor<1>], first: usize, d_in: usize, d_out: usize) -> Dense {
    Dense {
        weight: t[first].clone().reshape([d_in, d_out]) * 0.2,
        bias: Some(t[first + 1].clone()),
    }
}

#[test]
fn encoder_blocks_compose_the_cube_kernels() {
    let (batch, seq, width, inner, heads) = (2, 11, 16, 32, 2);
    let x = leaf(batch * seq * width, 40);
    let norm = |t: &[Tensor<1>], first: usize| LayerNormParams {
        gamma: t[first].clone(),
        beta: Some(t[first + 1].clone()),
        epsilon: 1e-12,
    };
    let feed_forward_leaves = [
        x.clone(),
        leaf(width * inner, 41),
        leaf(inner, 42),
        leaf(inner * width, 43),
        leaf(width, 44),
        leaf(width, 45),
        leaf(width, 46),
    ];
    agree(
        "feed-forward block",
        &feed_forward_leaves,
        &|t, _| {
            let x = t[0].clone().reshape([batch, seq, width]);
            graft_kernels::feed_forward(
                x,
                dense(t, 1, width, inner),
                dense(t, 3, inner, width),
                norm(t, 5),
            )
        },
        1e-5,
        // The ndarray reference differentiates burn's GELU, whose backward is the tanh
        // approximation's (up to 1.6e-3 from the exact erf derivative the Cube kernel uses per
        // element; summed over the 22 rows into the bias's gradient, 3.6e-3 measured).
        1e-2,
    );
    let mut attention_leaves = vec![x];
    for i in 0..4 {
        attention_leaves.push(leaf(width * width, 50 + 2 * i));
        attention_leaves.push(leaf(width, 51 + 2 * i));
    }
    attention_leaves.extend([leaf(width, 60), leaf(width, 61)]);
    agree(
        "self-attention block, padded",
        &attention_leaves,
        &|t, device| {
            let x = t[0].clone().reshape([batch, seq, width]);
            let layer = SelfAttention {
                query: dense(t, 1, width, width),
                key: dense(t, 3, width, width),
                value: dense(t, 5, width, width),
                output: dense(t, 7, width, width),
                heads,
            };
            let mask = padding_mask(&[seq, 4], heads, seq, seq, device);
            graft_kernels::self_attention(x, layer, Some(mask), None, norm(t, 9))
        },
        1e-5,
        1e-5,
    );
}
