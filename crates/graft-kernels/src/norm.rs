//! Layer normalization fused with what precedes it in a post-norm encoder block: the dense
//! layer's bias and the residual are added, and the row normalized, in one pass over a row that
//! stays in cache, in place.

use macerator::{Scalar, Simd, vload_unaligned, vstore_unaligned};
use rayon::prelude::*;

/// The parameters of one layer norm over rows of `gamma.len()`.
#[derive(Clone, Copy)]
pub struct Norm<'a> {
    pub gamma: &'a [f32],
    pub beta: Option<&'a [f32]>,
    pub epsilon: f32,
}

/// `rows ← LayerNorm(rows + bias + residual)`, each row of `norm.gamma.len()` elements.
pub fn add_layer_norm_in_place(
    rows: &mut [f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    norm: Norm,
) {
    let width = norm.gamma.len();
    assert_eq!(rows.len() % width, 0, "layer norm rows");
    if let Some(residual) = residual {
        assert_eq!(residual.len(), rows.len(), "layer norm residual");
    }
    let per_task = (16_384 / width).max(1);
    rows.par_chunks_mut(per_task * width)
        .enumerate()
        .for_each(|(task, chunk)| {
            let start = task * per_task * width;
            let residual = residual.map(|r| &r[start..start + chunk.len()]);
            for (r, row) in chunk.chunks_exact_mut(width).enumerate() {
                let residual = residual.map(|res| &res[r * width..(r + 1) * width]);
                normalize_row(row, bias, residual, norm.gamma, norm.beta, norm.epsilon);
            }
        });
}

/// `row ← LayerNorm(row + bias + residual)`, on this thread.
#[macerator::with_simd]
pub(crate) fn normalize_row<'a, S: Simd>(
    row: &'a mut [f32],
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
    gamma: &'a [f32],
    beta: Option<&'a [f32]>,
    epsilon: f32,
) {
    let lanes = f32::lanes::<S>();
    let width = row.len();
    let full = width / lanes * lanes;
    // Pass 1: add the bias and residual, and sum.
    let mut total = 0.0f32.splat::<S>();
    let mut j = 0;
    while j < full {
        unsafe {
            let mut x = vload_unaligned::<S, f32>(row.as_ptr().add(j));
            if let Some(bias) = bias {
                x += vload_unaligned::<S, f32>(bias.as_ptr().add(j));
            }
            if let Some(residual) = residual {
                x += vload_unaligned::<S, f32>(residual.as_ptr().add(j));
            }
            vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), x);
            total += x;
        }
        j += lanes;
    }
    let mut tail_total = 0.0;
    for j in full..width {
        let mut x = row[j];
        if let Some(bias) = bias {
            x += bias[j];
        }
        if let Some(residual) = residual {
            x += residual[j];
        }
        row[j] = x;
        tail_total += x;
    }
    let mean = (total.reduce_add() + tail_total) / width as f32;
    // Pass 2: the biased variance, as torch.nn.LayerNorm takes it.
    let centre = mean.splat::<S>();
    let mut squares = 0.0f32.splat::<S>();
    let mut j = 0;
    while j < full {
        let d = unsafe { vload_unaligned::<S, f32>(row.as_ptr().add(j)) } - centre;
        squares = d.mul_add(d, squares);
        j += lanes;
    }
    let tail_squares: f32 = row[full..].iter().map(|x| (x - mean) * (x - mean)).sum();
    let variance = (squares.reduce_add() + tail_squares) / width as f32;
    let inverse = 1.0 / (variance + epsilon).sqrt();
    // Pass 3: scale and shift.
    let scale = inverse.splat::<S>();
    let mut j = 0;
    while j < full {
        unsafe {
            let x = (vload_unaligned::<S, f32>(row.as_ptr().add(j)) - centre) * scale;
            let g = vload_unaligned::<S, f32>(gamma.as_ptr().add(j));
            let y = match beta {
                Some(beta) => x.mul_add(g, vload_unaligned::<S, f32>(beta.as_ptr().add(j))),
                None => x * g,
            };
            vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), y);
        }
        j += lanes;
    }
    for j in full..width {
        let x = (row[j] - mean) * inverse * gamma[j];
        row[j] = x + beta.map_or(0.0, |beta| beta[j]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_f64_layer_norm_of_the_sum() {
        for width in [5, 16, 37, 384] {
            let rows = 9;
            let x: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 37 % 101) as f32) * 0.1 - 3.0)
                .collect();
            let residual: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 13 % 29) as f32) * 0.2)
                .collect();
            let bias: Vec<f32> = (0..width).map(|j| j as f32 * 0.01).collect();
            let gamma: Vec<f32> = (0..width).map(|j| 1.0 + j as f32 * 0.003).collect();
            let beta: Vec<f32> = (0..width).map(|j| -(j as f32) * 0.002).collect();
            let mut out = x.clone();
            let norm = Norm {
                gamma: &gamma,
                beta: Some(&beta),
                epsilon: 1e-12,
            };
            add_layer_norm_in_place(&mut out, Some(&bias), Some(&residual), norm);
            for r in 0..rows {
                let sum: Vec<f64> = (0..width)
                    .map(|j| (x[r * width + j] + bias[j] + residual[r * width + j]) as f64)
                    .collect();
                let mean = sum.iter().sum::<f64>() / width as f64;
                let var = sum.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                for j in 0..width {
                    let exact =
                        (sum[j] - mean) / (var + 1e-12).sqrt() * gamma[j] as f64 + beta[j] as f64;
                    let got = out[r * width + j] as f64;
                    assert!((got - exact).abs() < 2e-6, "width {width} row {r} col {j}");
                }
            }
        }
    }
}
