//! The self-attention block of a post-norm encoder layer (BERT's attention with its output),
//! fused over chunks of whole sequences:
//! `x ← LayerNorm(x + Attention(x·W_q + b_q, x·W_k + b_k, x·W_v + b_v)·W_o + b_o)`, written over `x`.
//!
//! Unfused, the query, key and value projections are one `[rows, 3·hidden]` buffer per layer
//! (38 MB for 32 × 256 MiniLM tokens), which the allocator maps fresh and the kernel faults in
//! page by page every time. Here each task takes a few whole sequences through the projections,
//! the attention ([`attention`](crate::attention)) and the output projection, in a scratch small
//! enough for the allocator to reuse from its heap instead of mapping it fresh.

use rayon::prelude::*;

use crate::attention::{self, Heads, ScoreTerms, Strided};
use crate::dense::{self, Dense};
use crate::math;
use crate::norm::{self, Norm};
use crate::parts;

/// Rows a task aims for (whole sequences, at least one): enough for the gemms to run at full
/// speed; a task's scratch is 4 · rows · hidden floats (1.5 MB for MiniLM, 3 MB at base
/// size). 512 measured no faster.
const TARGET_ROWS: usize = 256;

/// The block's four projections, each `[hidden, hidden]`.
#[derive(Clone, Copy)]
pub struct Projections<'a> {
    pub query: Dense<'a>,
    pub key: Dense<'a>,
    pub value: Dense<'a>,
    pub output: Dense<'a>,
}

/// The block over `x`, `[batch, seq, hidden]` row-major with `hidden = norm.gamma.len()`, in
/// place. `terms` index the batch as `x` does; `scale` multiplies the scores.
#[allow(clippy::too_many_arguments)]
pub fn self_attention_in_place(
    x: &mut [f32],
    batch: usize,
    heads: usize,
    projections: Projections,
    terms: ScoreTerms,
    scale: f32,
    norm: Norm,
) {
    let width = norm.gamma.len();
    let seq = x.len() / (batch * width).max(1);
    assert_eq!(
        x.len(),
        batch * seq * width,
        "self-attention: [batch, seq, hidden]"
    );
    assert_eq!(
        width % heads.max(1),
        0,
        "self-attention: {heads} heads of {width}"
    );
    for dense in [
        projections.query,
        projections.key,
        projections.value,
        projections.output,
    ] {
        assert!(
            dense.weight.d_in == width && dense.weight.d_out == width,
            "self-attention: a projection is [{}, {}], not [{width}, {width}]",
            dense.weight.d_in,
            dense.weight.d_out
        );
    }
    if x.is_empty() {
        return;
    }
    if batch >= 2 * rayon::current_num_threads() {
        // Each thread runs chunks of whole sequences on its own.
        let parts = parts::part_count(batch, (TARGET_ROWS / seq).max(1));
        parts::even_parts(x, seq * width, parts)
            .into_par_iter()
            .for_each(|(b0, rows)| {
                let terms = shift(terms, b0);
                block(rows, seq, heads, projections, terms, scale, norm, false);
            });
    } else {
        // Too few sequences to share out: one chunk, whose gemms and attention split the work.
        block(x, seq, heads, projections, terms, scale, norm, true);
    }
}

/// `terms` for the batch starting at `b0`.
fn shift(terms: ScoreTerms, b0: usize) -> ScoreTerms {
    fn at<T>(s: Strided<T>, b0: usize) -> Strided<T> {
        Strided {
            offset: s.offset + b0 * s.strides[0],
            ..s
        }
    }
    ScoreTerms {
        mask: terms.mask.map(|m| at(m, b0)),
        bias: terms.bias.map(|b| at(b, b0)),
    }
}

/// One chunk of whole sequences through the block.
#[allow(clippy::too_many_arguments)]
fn block(
    x: &mut [f32],
    seq: usize,
    heads: usize,
    projections: Projections,
    terms: ScoreTerms,
    scale: f32,
    norm: Norm,
    parallel: bool,
) {
    let width = norm.gamma.len();
    let rows = x.len() / width;
    let size = rows * width;
    let parallelism = if parallel {
        dense::parallelism(rows, &projections.query.weight)
    } else {
        gemm::Parallelism::None
    };
    // Q, K, V, then the context.
    let mut scratch: Vec<f32> = Vec::with_capacity(4 * size);
    let projected = [projections.query, projections.key, projections.value];
    for (i, dense) in projected.iter().enumerate() {
        // SAFETY: `scratch` has room for 4 · size; this writes elements i·size..(i + 1)·size.
        unsafe {
            let out = scratch.as_mut_ptr().add(i * size);
            dense.weight.product(x, rows, out, false, parallelism);
        }
    }
    // SAFETY: the three products wrote the first 3 · size elements.
    unsafe { scratch.set_len(3 * size) };
    for (i, dense) in projected.iter().enumerate() {
        if let Some(bias) = dense.bias {
            math::add_bias_rows(&mut scratch[i * size..(i + 1) * size], bias);
        }
    }
    let shape = attention::Shape {
        batch: rows / seq,
        heads,
        seq_q: seq,
        seq_k: seq,
        head_dim: width / heads,
    };
    // Q, K and V are read through, and the context written through, one pointer into the
    // scratch, to disjoint parts of it.
    let base = scratch.as_mut_ptr();
    // SAFETY: the first 3 · size elements are initialized and only read from here on.
    let qkv = unsafe { std::slice::from_raw_parts(base, 3 * size) };
    let part = |i: usize| Heads {
        data: qkv,
        offset: i * size,
        batch_stride: seq * width,
        seq_stride: width,
    };
    // SAFETY: the context goes to elements 3·size..4·size, within capacity and apart from Q, K,
    // V, and `attention_into` writes all of them.
    let context = unsafe {
        let context = base.add(3 * size);
        attention::attention_into(
            part(0),
            part(1),
            part(2),
            shape,
            scale,
            terms,
            context,
            parallel,
        );
        std::slice::from_raw_parts(context, size)
    };
    // SAFETY: `x` holds rows · width elements, which the product reads and accumulates into.
    unsafe {
        projections
            .output
            .weight
            .product(context, rows, x.as_mut_ptr(), true, parallelism)
    };
    let bias = projections.output.bias;
    for row in x.chunks_exact_mut(width) {
        norm::normalize_row(row, bias, None, norm.gamma, norm.beta, norm.epsilon);
    }
}
