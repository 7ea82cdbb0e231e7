//! Fused scaled dot-product attention for inference. Queries, keys and values are read where the
//! projections wrote them, `[batch, seq, heads·head_dim]` (any row stride, so the three can be
//! views of one QKV product), and the context is written in that layout: no head split or merge
//! copy. Each task takes one (batch, head, block of queries) and walks the keys in tiles with an
//! online softmax, so the `[batch, heads, seq, seq]` scores never exist; a task's scratch is one
//! tile of scores and one block of context, which stay in cache.

use std::cell::RefCell;

use macerator::{Scalar, Simd, vload_unaligned, vstore_unaligned};
use rayon::prelude::*;

use crate::math;

/// Queries per task and keys per tile.
const QUERY_BLOCK: usize = 256;
const KEY_TILE: usize = 256;

/// Where one of Q, K, V lives: element `(b, i, h·head_dim + c)` is at
/// `data[offset + b·batch_stride + i·seq_stride + h·head_dim + c]`.
#[derive(Clone, Copy)]
pub struct Heads<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub batch_stride: usize,
    pub seq_stride: usize,
}

/// A `[batch, heads, seq_q, seq_k]` term read through strides (0 where it broadcasts).
#[derive(Clone, Copy)]
pub struct Strided<'a, T> {
    pub data: &'a [T],
    pub offset: usize,
    pub strides: [usize; 4],
}

impl<T: Copy> Strided<'_, T> {
    fn at(&self, b: usize, h: usize, i: usize, j: usize) -> T {
        let [sb, sh, si, sj] = self.strides;
        self.data[self.offset + b * sb + h * sh + i * si + j * sj]
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub seq_q: usize,
    pub seq_k: usize,
    pub head_dim: usize,
}

/// What is added to the scores before the softmax.
#[derive(Clone, Copy, Default)]
pub struct ScoreTerms<'a> {
    /// True where a key may not be seen: the score becomes `f32::MIN`, as `masked_fill` does.
    pub mask: Option<Strided<'a, u8>>,
    /// Added to the scores (relative position biases).
    pub bias: Option<Strided<'a, f32>>,
}

struct OutPtr(*mut f32);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `softmax(Q·Kᵀ·scale + terms)·V` into `out` (replacing its contents),
/// `[batch, seq_q, heads·head_dim]` contiguous.
pub fn attention(
    q: Heads,
    k: Heads,
    v: Heads,
    shape: Shape,
    scale: f32,
    terms: ScoreTerms,
    out: &mut Vec<f32>,
) {
    let size = shape.batch * shape.seq_q * shape.heads * shape.head_dim;
    out.clear();
    out.reserve(size);
    // SAFETY: `out` has room for the whole context, which `attention_into` writes in full.
    unsafe {
        attention_into(q, k, v, shape, scale, terms, out.as_mut_ptr(), true);
        out.set_len(size);
    }
}

/// [`attention`] into `out`, which must be valid for `batch · seq_q · heads · head_dim` writes,
/// all of which happen (nothing is read first). The tasks are shared out among rayon's threads
/// (`parallel`) or run on this one.
///
/// # Safety
/// `out` must be valid for those writes and not alias Q, K or V.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attention_into(
    q: Heads,
    k: Heads,
    v: Heads,
    shape: Shape,
    scale: f32,
    terms: ScoreTerms,
    out: *mut f32,
    parallel: bool,
) {
    let Shape {
        batch,
        heads,
        seq_q,
        seq_k,
        head_dim,
    } = shape;
    let width = heads * head_dim;
    if batch * seq_q * width == 0 {
        return;
    }
    // A key-padding mask (the same row for every head and query) becomes one additive row per
    // batch, added with vector instructions.
    let key_bias: Option<Vec<f32>> = terms.mask.and_then(|mask| {
        let [_, sh, si, _] = mask.strides;
        (sh == 0 && si == 0).then(|| {
            (0..batch)
                .flat_map(|b| (0..seq_k).map(move |j| (b, j)))
                .map(|(b, j)| {
                    if mask.at(b, 0, 0, j) != 0 {
                        f32::MIN
                    } else {
                        0.0
                    }
                })
                .collect()
        })
    });
    let general_mask = if key_bias.is_some() { None } else { terms.mask };
    let blocks = seq_q.div_ceil(QUERY_BLOCK);
    // Written through a pointer: the first key tile of each task writes its part of `out` before
    // anything reads it, and the parts cover it exactly.
    let out_ptr = OutPtr(out);
    let task = |task: usize| {
        let block = task % blocks;
        let h = (task / blocks) % heads;
        let b = task / (blocks * heads);
        let i0 = block * QUERY_BLOCK;
        let rows = QUERY_BLOCK.min(seq_q - i0);
        let tile = Tile {
            q,
            k,
            v,
            shape,
            scale,
            b,
            h,
            i0,
            rows,
            key_bias: key_bias
                .as_deref()
                .map(|kb| &kb[b * seq_k..(b + 1) * seq_k]),
            mask: general_mask,
            bias: terms.bias,
        };
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let need = rows * KEY_TILE + 2 * rows;
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            // The context accumulates in place in the output: this task alone owns rows
            // i0..i0 + rows of head h in batch b, so the writes never overlap.
            let out = &out_ptr;
            let context = unsafe { out.0.add((b * seq_q + i0) * width + h * head_dim) };
            tile.run(&mut scratch[..need], context, width);
        });
    };
    let tasks = batch * heads * blocks;
    if parallel {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

struct Tile<'a> {
    q: Heads<'a>,
    k: Heads<'a>,
    v: Heads<'a>,
    shape: Shape,
    scale: f32,
    b: usize,
    h: usize,
    i0: usize,
    rows: usize,
    key_bias: Option<&'a [f32]>,
    mask: Option<Strided<'a, u8>>,
    bias: Option<Strided<'a, f32>>,
}

impl Tile<'_> {
    /// Runs the block of queries over every key tile, accumulating the context in `context`
    /// (`rows` rows of `head_dim`, `row_stride` apart), normalized at the end.
    fn run(&self, scratch: &mut [f32], context: *mut f32, row_stride: usize) {
        let Shape {
            seq_k, head_dim, ..
        } = self.shape;
        let rows = self.rows;
        let (scores, rest) = scratch.split_at_mut(rows * KEY_TILE);
        let (max, sum) = rest.split_at_mut(rows);
        let context_row = |r: usize| unsafe {
            std::slice::from_raw_parts_mut(context.add(r * row_stride), head_dim)
        };
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        let column = self.h * head_dim;
        let q = self.q.offset + self.b * self.q.batch_stride + self.i0 * self.q.seq_stride + column;
        for j0 in (0..seq_k).step_by(KEY_TILE) {
            let keys = KEY_TILE.min(seq_k - j0);
            let scores = &mut scores[..rows * keys];
            let k = self.k.offset + self.b * self.k.batch_stride + j0 * self.k.seq_stride + column;
            let v = self.v.offset + self.b * self.v.batch_stride + j0 * self.v.seq_stride + column;
            // scores = scale · Q_block · K_tileᵀ
            unsafe {
                gemm::gemm(
                    rows,
                    keys,
                    head_dim,
                    scores.as_mut_ptr(),
                    1,
                    keys as isize,
                    false,
                    self.q.data[q..].as_ptr(),
                    1,
                    self.q.seq_stride as isize,
                    self.k.data[k..].as_ptr(),
                    self.k.seq_stride as isize,
                    1,
                    0.0f32,
                    self.scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            self.add_terms(scores, j0, keys);
            for r in 0..rows {
                let row = &mut scores[r * keys..(r + 1) * keys];
                let correction = softmax_step(row, &mut max[r], &mut sum[r]);
                if j0 > 0 && correction != 1.0 {
                    for c in context_row(r) {
                        *c *= correction;
                    }
                }
            }
            // context += P · V_tile
            unsafe {
                gemm::gemm(
                    rows,
                    head_dim,
                    keys,
                    context,
                    1,
                    row_stride as isize,
                    j0 > 0,
                    scores.as_ptr(),
                    1,
                    keys as isize,
                    self.v.data[v..].as_ptr(),
                    1,
                    self.v.seq_stride as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
        for (r, &total) in sum.iter().enumerate() {
            let inverse = 1.0 / total;
            for c in context_row(r) {
                *c *= inverse;
            }
        }
    }

    fn add_terms(&self, scores: &mut [f32], j0: usize, keys: usize) {
        let rows = self.rows;
        if let Some(key_bias) = self.key_bias {
            for row in scores.chunks_exact_mut(keys) {
                add_row(row, &key_bias[j0..j0 + keys]);
            }
        }
        if let Some(bias) = self.bias {
            for (r, row) in scores.chunks_exact_mut(keys).enumerate() {
                for (j, s) in row.iter_mut().enumerate() {
                    *s += bias.at(self.b, self.h, self.i0 + r, j0 + j);
                }
            }
        }
        if let Some(mask) = self.mask {
            for r in 0..rows {
                for j in 0..keys {
                    if mask.at(self.b, self.h, self.i0 + r, j0 + j) != 0 {
                        scores[r * keys + j] = f32::MIN;
                    }
                }
            }
        }
    }
}

/// One online-softmax step over a row of scores: updates the running max and sum, replaces the
/// scores by `e^(s − max)`, and returns the factor that rescales the context so far.
#[macerator::with_simd]
fn softmax_step<S: Simd>(row: &mut [f32], max: &mut f32, sum: &mut f32) -> f32 {
    let lanes = f32::lanes::<S>();
    let full = row.len() / lanes * lanes;
    let mut peak = f32::NEG_INFINITY.splat::<S>();
    let mut j = 0;
    while j < full {
        peak = peak.max(unsafe { vload_unaligned::<S, f32>(row.as_ptr().add(j)) });
        j += lanes;
    }
    let tile_max = row[full..]
        .iter()
        .fold(peak.reduce_max(), |m, &s| if s > m { s } else { m });
    let new_max = if tile_max > *max { tile_max } else { *max };
    let shift = new_max.splat::<S>();
    let mut total = 0.0f32.splat::<S>();
    let mut j = 0;
    while j < full {
        unsafe {
            let p = math::exp::<S>(vload_unaligned::<S, f32>(row.as_ptr().add(j)) - shift);
            vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), p);
            total += p;
        }
        j += lanes;
    }
    let mut tail_total = 0.0;
    if full < row.len() {
        let mut buffer = [f32::NEG_INFINITY; 64];
        let tail = &mut row[full..];
        buffer[..tail.len()].copy_from_slice(tail);
        let p = math::exp::<S>(unsafe { vload_unaligned::<S, f32>(buffer.as_ptr()) } - shift);
        unsafe { vstore_unaligned::<S, f32>(buffer.as_mut_ptr(), p) };
        tail.copy_from_slice(&buffer[..tail.len()]);
        tail_total = tail.iter().sum::<f32>();
    }
    let correction = if *max == new_max {
        1.0
    } else {
        (*max - new_max).exp()
    };
    *sum = *sum * correction + total.reduce_add() + tail_total;
    *max = new_max;
    correction
}

#[macerator::with_simd]
fn add_row<S: Simd>(row: &mut [f32], terms: &[f32]) {
    let lanes = f32::lanes::<S>();
    let full = row.len() / lanes * lanes;
    let mut j = 0;
    while j < full {
        unsafe {
            let s = vload_unaligned::<S, f32>(row.as_ptr().add(j))
                + vload_unaligned::<S, f32>(terms.as_ptr().add(j));
            vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), s);
        }
        j += lanes;
    }
    for (s, t) in row[full..].iter_mut().zip(&terms[full..]) {
        *s += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// The textbook computation in f64, one (batch, head, query) at a time.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        row_stride: usize,
        shape: Shape,
        scale: f32,
        mask: &dyn Fn(usize, usize, usize, usize) -> bool,
        bias: &dyn Fn(usize, usize, usize, usize) -> f32,
    ) -> Vec<f32> {
        let Shape {
            batch,
            heads,
            seq_q,
            seq_k,
            head_dim,
        } = shape;
        let mut out = vec![0.0; batch * seq_q * heads * head_dim];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq_q {
                    let at = |data: &[f32], s: usize, len: usize, c: usize| {
                        data[b * len * row_stride + s * row_stride + h * head_dim + c] as f64
                    };
                    let scores: Vec<f64> = (0..seq_k)
                        .map(|j| {
                            if mask(b, h, i, j) {
                                return f32::MIN as f64;
                            }
                            let dot: f64 = (0..head_dim)
                                .map(|c| at(q, i, seq_q, c) * at(k, j, seq_k, c))
                                .sum();
                            dot * scale as f64 + bias(b, h, i, j) as f64
                        })
                        .collect();
                    let peak = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - peak).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    for c in 0..head_dim {
                        let value: f64 = (0..seq_k).map(|j| weights[j] * at(v, j, seq_k, c)).sum();
                        out[((b * seq_q + i) * heads + h) * head_dim + c] = (value / total) as f32;
                    }
                }
            }
        }
        out
    }

    fn check(shape: Shape, masked: bool, biased: bool) {
        let Shape {
            batch,
            heads,
            seq_q,
            seq_k,
            head_dim,
        } = shape;
        let width = heads * head_dim;
        // Q, K and V interleaved as one QKV product: row stride 3·width.
        let row_stride = 3 * width;
        let rows = batch * seq_q.max(seq_k);
        let qkv = values(rows * row_stride, 7);
        let view = |part: usize, seq: usize| Heads {
            data: &qkv,
            offset: part * width,
            batch_stride: seq * row_stride,
            seq_stride: row_stride,
        };
        let lengths: Vec<usize> = (0..batch).map(|b| seq_k - (b * 5) % seq_k.min(6)).collect();
        let key_mask: Vec<u8> = (0..batch)
            .flat_map(|b| (0..seq_k).map(move |j| (j >= lengths_of(b, seq_k)) as u8))
            .collect();
        fn lengths_of(b: usize, seq_k: usize) -> usize {
            seq_k - (b * 5) % seq_k.min(6)
        }
        assert_eq!(lengths[0], seq_k);
        let bias_values = values(heads * seq_q * seq_k, 11);
        let terms = ScoreTerms {
            mask: masked.then_some(Strided {
                data: &key_mask,
                offset: 0,
                strides: [seq_k, 0, 0, 1],
            }),
            bias: biased.then_some(Strided {
                data: &bias_values,
                offset: 0,
                strides: [0, seq_q * seq_k, seq_k, 1],
            }),
        };
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut out = Vec::new();
        attention(
            view(0, seq_q),
            view(1, seq_k),
            view(2, seq_k),
            shape,
            scale,
            terms,
            &mut out,
        );
        let (qp, kp, vp) = (&qkv[..], &qkv[width..], &qkv[2 * width..]);
        let expected = reference(
            qp,
            kp,
            vp,
            row_stride,
            shape,
            scale,
            &|b, _, _, j| masked && key_mask[b * seq_k + j] != 0,
            &|_, h, i, j| {
                if biased {
                    bias_values[(h * seq_q + i) * seq_k + j]
                } else {
                    0.0
                }
            },
        );
        let worst = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst < 2e-6,
            "{shape:?} masked {masked} biased {biased}: {worst:e}"
        );
    }

    #[test]
    fn matches_the_textbook_attention() {
        let shape = |batch, heads, seq, head_dim| Shape {
            batch,
            heads,
            seq_q: seq,
            seq_k: seq,
            head_dim,
        };
        check(shape(2, 3, 7, 8), false, false);
        check(shape(3, 2, 70, 16), true, false);
        check(shape(2, 2, 33, 32), true, true);
        // Several key tiles (online softmax) and several query blocks.
        check(shape(2, 2, 600, 8), true, false);
        check(shape(1, 1, 300, 64), false, true);
    }

    #[test]
    fn a_general_mask_is_applied_per_query() {
        let (batch, heads, seq, head_dim) = (2, 2, 40, 8);
        let width = heads * head_dim;
        let qkv = values(batch * seq * 3 * width, 3);
        let view = |part: usize| Heads {
            data: &qkv,
            offset: part * width,
            batch_stride: seq * 3 * width,
            seq_stride: 3 * width,
        };
        // A sliding window of ±4 keys, shared by batches and heads.
        let window: Vec<u8> = (0..seq * seq)
            .map(|n| ((n / seq).abs_diff(n % seq) > 4) as u8)
            .collect();
        let shape = Shape {
            batch,
            heads,
            seq_q: seq,
            seq_k: seq,
            head_dim,
        };
        let mut out = Vec::new();
        let terms = ScoreTerms {
            mask: Some(Strided {
                data: &window,
                offset: 0,
                strides: [0, 0, seq, 1],
            }),
            bias: None,
        };
        attention(view(0), view(1), view(2), shape, 0.3, terms, &mut out);
        let expected = reference(
            &qkv,
            &qkv[width..],
            &qkv[2 * width..],
            3 * width,
            shape,
            0.3,
            &|_, _, i, j| i.abs_diff(j) > 4,
            &|_, _, _, _| 0.0,
        );
        let worst = out
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 2e-6, "{worst:e}");
    }
}
