//! The fused Flex kernels against burn's own ops: each public function on a Flex device (fused)
//! must give what the same call gives on NdArray and on Flex with autodiff (burn's ops), for the
//! layouts the encoders pass: views of one QKV product, broadcast masks, biases and residuals
//! (added into in place, or copied when shared).

#![allow(deprecated)] // NdArray is one of graft's backends

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

fn devices() -> [Device; 3] {
    [Device::flex(), Device::ndarray(), Device::flex().autodiff()]
}

/// Deterministic values in about [-3, 3].
fn random<const D: usize>(shape: [usize; D], seed: u64) -> TensorData {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    let values: Vec<f32> = (0..shape.iter().product::<usize>())
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 6.0 - 3.0
        })
        .collect();
    TensorData::new(values, shape)
}

fn on<const D: usize>(data: &TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data.clone(), device)
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a = a.into_data().to_vec::<f32>().unwrap();
    let b = b.into_data().to_vec::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The `[batch, heads, seq, seq]` mask the encoders pass: true where the key is past a row's length.
fn padding_mask(lengths: &[usize], seq: usize, heads: usize, device: &Device) -> Tensor<4, Bool> {
    let batch = lengths.len();
    let ids: Vec<i64> = lengths
        .iter()
        .flat_map(|&len| (0..seq).map(move |j| i64::from(j < len)))
        .collect();
    Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), device)
        .equal_elem(0)
        .reshape([batch, 1, 1, seq])
        .expand([batch, heads, seq, seq])
}

/// Runs `f` on every device and checks the fused result against the others.
fn agree<const D: usize>(what: &str, tolerance: f32, f: impl Fn(&Device) -> Tensor<D>) {
    let [fused, reference, autodiff] = devices().map(|d| f(&d));
    let expected = reference.into_data();
    let diff = max_diff(fused, Tensor::from_data(expected.clone(), &Device::flex()));
    assert!(
        diff <= tolerance,
        "{what}: fused differs from ndarray by {diff:e}"
    );
    let diff = max_diff(autodiff, Tensor::from_data(expected, &Device::flex()));
    assert!(
        diff <= tolerance,
        "{what}: flex autodiff differs from ndarray by {diff:e}"
    );
}

#[test]
fn only_flex_inference_is_served() {
    assert!(graft_kernels::serves(&Device::flex()));
    assert!(!graft_kernels::serves(&Device::flex().autodiff()));
    assert!(!graft_kernels::serves(&Device::ndarray()));
}

#[test]
fn gelu_with_and_without_bias() {
    let x = random([3, 5, 37], 1);
    let bias = random([37], 2);
    agree("gelu", 1e-6, |d| graft_kernels::gelu(on::<3>(&x, d), None));
    agree("gelu + bias", 1e-6, |d| {
        graft_kernels::gelu(on::<3>(&x, d), Some(on(&bias, d)))
    });
}

#[test]
fn linear_on_contiguous_and_transposed_weights() {
    let x = random([2, 9, 24], 3);
    let w = random([24, 40], 4);
    let w_t = random([40, 24], 5);
    let b = random([40], 6);
    agree("linear", 1e-5, |d| {
        graft_kernels::linear(on::<3>(&x, d), on(&w, d), Some(on(&b, d)))
    });
    // A weight stored as the transpose of PyTorch's [out, in] (a strided view).
    agree("linear, transposed weight", 1e-5, |d| {
        graft_kernels::linear(on::<3>(&x, d), on::<2>(&w_t, d).transpose(), None)
    });
}

#[test]
fn linear_added_into_a_residual() {
    let x = random([2, 9, 24], 12);
    let w = random([24, 40], 13);
    let b = random([40], 14);
    let r = random([2, 9, 40], 15);
    agree("linear + residual", 1e-5, |d| {
        graft_kernels::linear_add(on::<3>(&x, d), on(&w, d), Some(on(&b, d)), on(&r, d))
    });
    // A residual that something else still holds keeps its values (the sum goes to a copy).
    let d = Device::flex();
    let held: Tensor<3> = on(&r, &d);
    let sum = graft_kernels::linear_add(on::<3>(&x, &d), on(&w, &d), None, held.clone());
    assert_eq!(held.into_data(), r);
    let expected = on::<3>(&r, &d) + burn::tensor::module::linear(on(&x, &d), on(&w, &d), None);
    assert!(max_diff(sum, expected) <= 1e-5);
}

#[test]
fn layer_norm_of_bias_and_residual() {
    let x = random([4, 6, 48], 7);
    let residual = random([4, 6, 48], 8);
    let (bias, gamma, beta) = (random([48], 9), random([48], 10), random([48], 11));
    agree("add + layer norm", 1e-5, |d| {
        graft_kernels::add_layer_norm(
            on::<3>(&x, d),
            Some(on(&bias, d)),
            Some(on(&residual, d)),
            on(&gamma, d),
            Some(on(&beta, d)),
            1e-12,
        )
    });
    agree("plain layer norm", 1e-5, |d| {
        graft_kernels::add_layer_norm(on::<3>(&x, d), None, None, on(&gamma, d), None, 1e-5)
    });
}

#[test]
fn feed_forward_block_in_chunks_and_whole() {
    let (w1, b1, w2, b2) = (
        random([24, 96], 16),
        random([96], 17),
        random([96, 24], 18),
        random([24], 19),
    );
    let (gamma, beta) = (random([24], 20), random([24], 21));
    let block = |x: Tensor<3>, d: &Device, w1: Tensor<2>| {
        graft_kernels::feed_forward(
            x,
            graft_kernels::Dense {
                weight: w1,
                bias: Some(on(&b1, d)),
            },
            graft_kernels::Dense {
                weight: on(&w2, d),
                bias: Some(on(&b2, d)),
            },
            graft_kernels::LayerNormParams {
                gamma: on(&gamma, d),
                beta: Some(on(&beta, d)),
                epsilon: 1e-12,
            },
        )
    };
    // Few rows (the gemms split the products), rows shared out in chunks of 128 with a short
    // last one, and a weight stored as the transpose of PyTorch's [out, in].
    for (shape, seed) in [([1, 5, 24], 22), ([3, 300, 24], 23)] {
        let x = random(shape, seed);
        agree("feed-forward", 1e-5, |d| block(on(&x, d), d, on(&w1, d)));
    }
    let x = random([2, 9, 24], 24);
    let w1_t = on::<2>(&w1, &Device::ndarray()).transpose().into_data();
    agree("feed-forward, transposed weight", 1e-5, |d| {
        block(on(&x, d), d, on::<2>(&w1_t, d).transpose())
    });
    // An input that something else still holds keeps its values (the result goes to a copy).
    let d = Device::flex();
    let held: Tensor<3> = on(&x, &d);
    let out = block(held.clone(), &d, on(&w1, &d));
    assert_eq!(held.clone().into_data(), x);
    let nd = Device::ndarray();
    let expected = block(on(&x, &nd), &nd, on(&w1, &nd));
    assert!(max_diff(out, Tensor::from_data(expected.into_data(), &d)) <= 1e-5);
}

#[test]
fn attention_on_qkv_views_with_padding_masks_and_biases() {
    let (batch, seq, heads, head_dim) = (3, 21, 4, 8);
    let width = heads * head_dim;
    let qkv = random([batch, seq, 3 * width], 12);
    let bias = random([1, heads, seq, seq], 13);
    let pad_mask = |d: &Device| padding_mask(&[21, 15, 4], seq, heads, d);
    let parts = |d: &Device| {
        let qkv = on::<3>(&qkv, d);
        [0, 1, 2].map(|i| qkv.clone().narrow(2, i * width, width))
    };
    agree("attention", 2e-6, |d| {
        let [q, k, v] = parts(d);
        graft_kernels::attention(q, k, v, heads, None, None, None)
    });
    agree("attention, padded", 2e-6, |d| {
        let [q, k, v] = parts(d);
        graft_kernels::attention(q, k, v, heads, Some(pad_mask(d)), None, Some(0.3))
    });
    agree("attention, padded and biased", 2e-6, |d| {
        let [q, k, v] = parts(d);
        let bias = on::<4>(&bias, d).expand([batch, heads, seq, seq]);
        graft_kernels::attention(q, k, v, heads, Some(pad_mask(d)), Some(bias), None)
    });
    // A sliding window shared by every batch and head (ModernBERT's local layers).
    let window: Vec<bool> = (0..seq * seq)
        .map(|n| (n / seq).abs_diff(n % seq) > 3)
        .collect();
    let window = TensorData::new(window, [1, 1, seq, seq]);
    agree("attention, windowed", 2e-6, |d| {
        let [q, k, v] = parts(d);
        let mask = Tensor::<4, Bool>::from_data(window.clone(), d).expand([batch, heads, seq, seq]);
        graft_kernels::attention(q, k, v, heads, Some(mask), None, None)
    });
}

#[test]
fn other_dtypes_take_burns_ops() {
    let x = random([2, 3, 8], 14);
    let w = random([8, 5], 15);
    let device = Device::flex();
    let half = |t: Tensor<3>| t.cast(burn::tensor::DType::F16);
    let w = on::<2>(&w, &device).cast(burn::tensor::DType::F16);
    // A half-precision model on Flex: burn's ops, the same result as calling them directly.
    let x = half(on::<3>(&x, &device));
    let served = graft_kernels::linear(x.clone(), w.clone(), None);
    let direct = burn::tensor::module::linear(x, w, None);
    assert_eq!(served.dtype(), burn::tensor::DType::F16);
    assert_eq!(served.into_data(), direct.into_data());
}

#[test]
fn self_attention_block_over_whole_sequences() {
    let (heads, width) = (4, 32);
    let weights: Vec<(TensorData, TensorData)> = (0..4)
        .map(|i| (random([width, width], 30 + i), random([width], 40 + i)))
        .collect();
    let (gamma, beta) = (random([width], 50), random([width], 51));
    let block =
        |x: Tensor<3>, mask: Option<Tensor<4, Bool>>, bias: Option<Tensor<4>>, d: &Device| {
            let dense = |i: usize| graft_kernels::Dense {
                weight: on(&weights[i].0, d) * 0.2,
                bias: Some(on(&weights[i].1, d)),
            };
            let layer = graft_kernels::SelfAttention {
                query: dense(0),
                key: dense(1),
                value: dense(2),
                output: dense(3),
                heads,
            };
            let norm = graft_kernels::LayerNormParams {
                gamma: on(&gamma, d),
                beta: Some(on(&beta, d)),
                epsilon: 1e-12,
            };
            graft_kernels::self_attention(x, layer, mask, bias, norm)
        };
    // One sequence (the work is split inside it), several sequences a chunk with a short last
    // chunk, and one sequence a chunk; each with and without padding.
    for (batch, seq, seed) in [(1, 37, 52), (5, 100, 53), (3, 300, 54)] {
        let x = random([batch, seq, width], seed);
        let lengths: Vec<usize> = (0..batch).map(|b| seq - b * seq / (batch + 1)).collect();
        let pad_mask = |d: &Device| padding_mask(&lengths, seq, heads, d);
        let bias = random([1, heads, seq, seq], seed + 10);
        agree("self-attention block", 1e-5, |d| {
            block(on(&x, d), None, None, d)
        });
        agree("self-attention block, padded and biased", 1e-5, |d| {
            let bias = on::<4>(&bias, d).expand([batch, heads, seq, seq]);
            block(on(&x, d), Some(pad_mask(d)), Some(bias), d)
        });
    }
    // An input that something else still holds keeps its values (the result goes to a copy).
    let x = random([2, 9, width], 55);
    let d = Device::flex();
    let held: Tensor<3> = on(&x, &d);
    let out = block(held.clone(), None, None, &d);
    assert_eq!(held.into_data(), x);
    let nd = Device::ndarray();
    let expected = block(on(&x, &nd), None, None, &nd);
    assert!(max_diff(out, Tensor::from_data(expected.into_data(), &d)) <= 1e-5);
}
