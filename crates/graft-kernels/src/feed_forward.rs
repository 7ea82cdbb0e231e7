//! The feed-forward block of a post-norm encoder layer (BERT's intermediate and output), fused
//! over chunks of rows: `x ← LayerNorm(x + GELU(x·W₁ + b₁)·W₂ + b₂)`, written over `x`.
//!
//! Unfused, the `[rows, intermediate]` activation is one buffer per layer (50 MB for 32 × 256
//! MiniLM tokens, more at base size), which the allocator maps fresh and the kernel faults in
//! page by page every time. Here each task takes a chunk of rows through both products, the GELU
//! and the norm, with a scratch of one chunk's activation, small enough for the allocator to reuse
//! from its heap instead of mapping it fresh.

use rayon::prelude::*;

use crate::dense::{self, Dense};
use crate::math;
use crate::norm::{self, Norm};
use crate::parts;

/// Rows per task. A task's scratch is `CHUNK_ROWS · intermediate` floats (3 MB for MiniLM,
/// 6 MB at base size). On a 2-core AVX-512 Xeon 128 rows ran about 10% slower than 512, and 1024
/// to 2048 were no faster at MiniLM size and up to 5% faster at base size, for more scratch.
const CHUNK_ROWS: usize = 512;

/// Below this many rows per thread the rows stay one chunk, and the gemms split each product as
/// the unfused path does.
const MIN_ROWS_PER_THREAD: usize = 64;

/// `x ← LayerNorm(x + GELU(x·up + up.bias)·down + down.bias)` over rows of `norm.gamma.len()`.
pub fn feed_forward_in_place(x: &mut [f32], up: Dense, down: Dense, norm: Norm) {
    let width = norm.gamma.len();
    assert_eq!(
        up.weight.d_in, width,
        "feed-forward: the up projection's inputs"
    );
    assert_eq!(
        down.weight.d_out, width,
        "feed-forward: the down projection's outputs"
    );
    assert_eq!(
        up.weight.d_out, down.weight.d_in,
        "feed-forward: the intermediate width"
    );
    assert_eq!(x.len() % width.max(1), 0, "feed-forward: rows of {width}");
    if x.is_empty() {
        return;
    }
    let rows = x.len() / width;
    if rows >= MIN_ROWS_PER_THREAD * rayon::current_num_threads() {
        // Each thread runs whole chunks with single-threaded gemms.
        let parts = parts::part_count(rows, CHUNK_ROWS);
        parts::even_parts(x, width, parts)
            .into_par_iter()
            .for_each(|(_, rows)| block(rows, up, down, norm, gemm::Parallelism::None));
    } else {
        // Too few rows to share out: one chunk, whose gemms split each product instead.
        let parallelism = dense::parallelism(rows, &up.weight);
        block(x, up, down, norm, parallelism);
    }
}

/// One chunk of rows through the whole block.
fn block(x: &mut [f32], up: Dense, down: Dense, norm: Norm, parallelism: gemm::Parallelism) {
    let width = norm.gamma.len();
    let rows = x.len() / width;
    let mut inner: Vec<f32> = Vec::with_capacity(rows * up.weight.d_out);
    unsafe {
        // SAFETY: `inner` has room for rows · d_out, which the product writes in full.
        up.weight
            .product(x, rows, inner.as_mut_ptr(), false, parallelism);
        inner.set_len(rows * up.weight.d_out);
    }
    math::bias_gelu_rows(&mut inner, up.bias);
    // SAFETY: `x` holds rows · width elements, which the product reads and accumulates into.
    unsafe {
        down.weight
            .product(&inner, rows, x.as_mut_ptr(), true, parallelism)
    };
    for row in x.chunks_exact_mut(width) {
        norm::normalize_row(row, down.bias, None, norm.gamma, norm.beta, norm.epsilon);
    }
}
