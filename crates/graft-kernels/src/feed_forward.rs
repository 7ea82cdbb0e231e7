//! The feed-forward block of a post-norm encoder layer (BERT's intermediate and output), fused
//! over chunks of rows: `x ← LayerNorm(x + GELU(x·W₁ + b₁)·W₂ + b₂)`, written over `x`.
//!
//! Unfused, the `[rows, intermediate]` activation is one buffer per layer (50 MB for 32 × 256
//! MiniLM tokens, more at base size), which the allocator maps fresh and the kernel faults in
//! page by page every time. Here each task takes a chunk of rows through both products, the GELU
//! and the norm, using a per-thread scratch of one chunk's activation that is reused and stays in
//! cache.

use std::cell::Cell;

use rayon::prelude::*;

use crate::dense::{self, Dense};
use crate::math;
use crate::norm::{self, Norm};

/// Rows per task: the scratch is `CHUNK_ROWS · intermediate` floats (0.8 MB for MiniLM,
/// 1.5 MB at base size), within a core's L2.
const CHUNK_ROWS: usize = 128;

thread_local! {
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

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
    let chunk = CHUNK_ROWS * width;
    if x.len().div_ceil(chunk.max(1)) >= rayon::current_num_threads() {
        // Enough chunks for every thread: each runs whole chunks with single-threaded gemms.
        x.par_chunks_mut(chunk)
            .for_each(|rows| block(rows, up, down, norm, gemm::Parallelism::None));
    } else {
        // Too few rows to share out by chunk: the gemms split each product instead.
        for rows in x.chunks_mut(chunk.max(1)) {
            let parallelism = dense::parallelism(rows.len() / width, &up.weight);
            block(rows, up, down, norm, parallelism);
        }
    }
}

/// One chunk of rows through the whole block.
fn block(x: &mut [f32], up: Dense, down: Dense, norm: Norm, parallelism: gemm::Parallelism) {
    let width = norm.gamma.len();
    let rows = x.len() / width;
    // Taken out of the thread-local for the duration, so nothing borrowed is held across a gemm
    // that may run other rayon tasks on this thread.
    let mut inner = SCRATCH.take();
    inner.clear();
    inner.reserve(rows * up.weight.d_out);
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
    SCRATCH.set(inner);
}
