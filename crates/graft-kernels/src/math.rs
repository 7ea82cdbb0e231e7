//! Vectorized `exp`, `erf` and exact GELU over f32 slices. Each public function picks the widest
//! SIMD instruction set the running CPU has (AVX-512, AVX2, SSE4.2, NEON, or scalar) through
//! `macerator`, so one binary serves every x86-64 and ARM machine.
//!
//! `erf` is piecewise: `x·P(x²)` below 0.75, `1 − e^(−x²)·R(1/|x|)` up to 3.92, ±1 beyond.
//! The polynomials were fitted in f64 against mpmath (`scripts/golden/fit_erf.py`); the absolute
//! error against an f64 reference stays below 1e-7 over the whole f32 range (tested).

use macerator::{Scalar, Simd, Vector, vload_unaligned, vstore_unaligned};
use rayon::prelude::*;

type F32s<S> = Vector<S, f32>;

pub(crate) const ERF_SPLIT: f32 = 0.75;
pub(crate) const ERF_ONE: f32 = 3.92;
/// `erf(x) / x = A0 + x²·(A1 + x²·(...))` on `[0, 0.75]`.
pub(crate) const ERF_SMALL: [f32; 7] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.376_126_38,
    0.112_837_784,
    -0.026_864_735,
    0.005_216_663,
    -0.000_835_493_8,
    9.458_729_6e-5,
];
/// `erfc(x)·e^(x²)` as a polynomial in `t = (1/x − ERFC_CENTER) / ERFC_HALF_WIDTH` on `[0.75, 3.92]`.
pub(crate) const ERFC_SCALED: [f32; 11] = [
    0.365_931_33,
    0.176_824_93,
    -0.043_011_546,
    0.007_771_286_6,
    -0.000_147_111_09,
    -0.000_742_385_34,
    0.000_450_891_36,
    -0.000_213_592_07,
    8.406_491_5e-5,
    9.184_847e-6,
    -1.940_952_6e-5,
];
pub(crate) const ERFC_CENTER: f32 = 0.794_217_7;
pub(crate) const ERFC_HALF_WIDTH: f32 = 0.539_115_67;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for the `n` that occur (Cody and Waite).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` polynomial on `[-ln2/2, ln2/2]`.
const EXP_POLY: [f32; 6] = [
    0.5,
    1.666_666_5e-1,
    4.166_579_6e-2,
    8.333_452e-3,
    1.398_199_9e-3,
    1.987_569_1e-4,
];

#[inline(always)]
fn horner<S: Simd>(coefficients: &[f32], x: F32s<S>) -> F32s<S> {
    let (last, rest) = coefficients
        .split_last()
        .expect("a polynomial has coefficients");
    let mut acc = last.splat::<S>();
    for &c in rest.iter().rev() {
        acc = acc.mul_add(x, c.splat());
    }
    acc
}

/// `e^x` to about 1 ulp; arguments below −87.3 give the smallest normal float, not 0.
#[inline(always)]
pub(crate) fn exp<S: Simd>(x: F32s<S>) -> F32s<S> {
    let x = x.max((-87.336_54f32).splat()).min(88.0f32.splat());
    let n = (x * LOG2_E.splat()).round_ties_even();
    let r = n.mul_add((-LN2_HI).splat(), x);
    let r = n.mul_add((-LN2_LO).splat(), r);
    let p = horner::<S>(&EXP_POLY, r);
    let e = (p * r).mul_add(r, r) + 1.0f32.splat();
    let scale = ((n.round_to_int() + 127i32.splat()) << 23).reinterpret::<f32>();
    e * scale
}

/// `erf(x)` with an absolute error below 1e-7.
#[inline(always)]
pub(crate) fn erf<S: Simd>(x: F32s<S>) -> F32s<S> {
    let a = x.abs();
    let x2 = x * x;
    let small = x.mul_add(
        ERF_SMALL[0].splat(),
        (x * x2) * horner::<S>(&ERF_SMALL[1..], x2),
    );
    let u = 1.0f32.splat::<S>() / a.max(ERF_SPLIT.splat());
    let t = (u - ERFC_CENTER.splat()) * (1.0 / ERFC_HALF_WIDTH).splat();
    let tail = exp::<S>(0.0f32.splat::<S>() - x2) * horner::<S>(&ERFC_SCALED, t);
    let large = tail.mul_add((-1.0f32).splat(), 1.0f32.splat());
    let large = a.ge(ERF_ONE.splat()).select(1.0f32.splat(), large);
    let sign = x.reinterpret::<u32>() & 0x8000_0000u32.splat();
    let large = (large.reinterpret::<u32>() | sign).reinterpret::<f32>();
    a.lt(ERF_SPLIT.splat()).select(small, large)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`, as transformers' `gelu` and PyTorch compute it.
#[inline(always)]
pub(crate) fn gelu<S: Simd>(x: F32s<S>) -> F32s<S> {
    let half = x * 0.5f32.splat();
    let e = erf::<S>(x * std::f32::consts::FRAC_1_SQRT_2.splat());
    half.mul_add(e, half)
}

/// Applies `f` to every element in place, the tail through a padded vector.
#[inline(always)]
fn map_in_place<S: Simd>(data: &mut [f32], f: impl Fn(F32s<S>) -> F32s<S>) {
    let lanes = f32::lanes::<S>();
    let mut chunks = data.chunks_exact_mut(lanes);
    for chunk in &mut chunks {
        unsafe {
            let v = vload_unaligned::<S, f32>(chunk.as_ptr());
            vstore_unaligned::<S, f32>(chunk.as_mut_ptr(), f(v));
        }
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let mut buffer = [0.0f32; 64];
        buffer[..tail.len()].copy_from_slice(tail);
        unsafe {
            let v = vload_unaligned::<S, f32>(buffer.as_ptr());
            vstore_unaligned::<S, f32>(buffer.as_mut_ptr(), f(v));
        }
        tail.copy_from_slice(&buffer[..tail.len()]);
    }
}

#[macerator::with_simd]
fn erf_slice<S: Simd>(data: &mut [f32]) {
    map_in_place::<S>(data, erf::<S>);
}

#[macerator::with_simd]
fn exp_slice<S: Simd>(data: &mut [f32]) {
    map_in_place::<S>(data, exp::<S>);
}

/// `gelu(row + bias)` for each row of `bias.len()` elements (no bias: `gelu(row)`), on this thread.
#[macerator::with_simd]
pub(crate) fn bias_gelu_rows<'a, S: Simd>(data: &'a mut [f32], bias: Option<&'a [f32]>) {
    match bias {
        None => map_in_place::<S>(data, gelu::<S>),
        Some(bias) => {
            let lanes = f32::lanes::<S>();
            let width = bias.len();
            let full = width / lanes * lanes;
            for row in data.chunks_exact_mut(width) {
                let mut j = 0;
                while j < full {
                    unsafe {
                        let v = vload_unaligned::<S, f32>(row.as_ptr().add(j))
                            + vload_unaligned::<S, f32>(bias.as_ptr().add(j));
                        vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), gelu::<S>(v));
                    }
                    j += lanes;
                }
                for (value, b) in row[full..].iter_mut().zip(&bias[full..]) {
                    *value += b;
                }
                map_in_place::<S>(&mut row[full..], gelu::<S>);
            }
        }
    }
}

/// Adds `bias` to each row of `bias.len()` elements, on this thread.
#[macerator::with_simd]
pub(crate) fn add_bias_rows<'a, S: Simd>(data: &'a mut [f32], bias: &'a [f32]) {
    let lanes = f32::lanes::<S>();
    let full = bias.len() / lanes * lanes;
    for row in data.chunks_exact_mut(bias.len()) {
        let mut j = 0;
        while j < full {
            unsafe {
                let v = vload_unaligned::<S, f32>(row.as_ptr().add(j))
                    + vload_unaligned::<S, f32>(bias.as_ptr().add(j));
                vstore_unaligned::<S, f32>(row.as_mut_ptr().add(j), v);
            }
            j += lanes;
        }
        for (value, b) in row[full..].iter_mut().zip(&bias[full..]) {
            *value += b;
        }
    }
}

/// Elements per parallel task of the element-wise kernels.
const CHUNK: usize = 1 << 14;

/// `erf` of every element, in place.
pub fn erf_in_place(data: &mut [f32]) {
    data.par_chunks_mut(CHUNK).for_each(erf_slice);
}

/// `e^x` of every element, in place.
pub fn exp_in_place(data: &mut [f32]) {
    data.par_chunks_mut(CHUNK).for_each(exp_slice);
}

/// Adds `bias` to each row of `bias.len()` elements, in place.
pub fn add_bias_in_place(data: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    let rows = (CHUNK / bias.len()).max(1);
    data.par_chunks_mut(rows * bias.len())
        .for_each(|chunk| add_bias_rows(chunk, bias));
}

/// Exact GELU of every element after adding `bias` to each row (rows of `bias.len()`), in place.
pub fn bias_gelu_in_place(data: &mut [f32], bias: Option<&[f32]>) {
    match bias {
        Some(bias) if !bias.is_empty() => {
            let rows = (CHUNK / bias.len()).max(1);
            data.par_chunks_mut(rows * bias.len())
                .for_each(|chunk| bias_gelu_rows(chunk, Some(bias)));
        }
        _ => data
            .par_chunks_mut(CHUNK)
            .for_each(|chunk| bias_gelu_rows(chunk, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 251st f32 bit pattern (both signs, all exponents) plus a fine grid where erf bends.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (0..u32::MAX / 251)
            .map(|i| f32::from_bits(i * 251))
            .filter(|x| x.is_finite())
            .collect();
        xs.extend((-800_000..=800_000).map(|i| i as f32 * 1e-5));
        xs
    }

    #[test]
    fn erf_is_within_1e7_of_f64_over_the_f32_range() {
        let xs = sweep();
        let mut ys = xs.clone();
        erf_in_place(&mut ys);
        let (worst, at) = xs
            .iter()
            .zip(&ys)
            .map(|(&x, &y)| ((y as f64 - libm::erf(x as f64)).abs(), x))
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a });
        eprintln!("erf: largest error {worst:e} at {at}");
        assert!(worst <= 1e-7, "erf error {worst:e} at {at}");
        assert!(worst > 0.0, "the sweep compares something");
    }

    #[test]
    fn gelu_matches_the_f64_formula() {
        let xs = sweep();
        let mut ys = xs.clone();
        bias_gelu_in_place(&mut ys, None);
        for (&x, &y) in xs.iter().zip(&ys) {
            let x64 = x as f64;
            let exact = 0.5 * x64 * (1.0 + libm::erf(x64 * std::f64::consts::FRAC_1_SQRT_2));
            let tolerance = 1e-7 * x64.abs().max(1e-30) + 1e-37;
            assert!(
                (y as f64 - exact).abs() <= tolerance.max(2e-7 * exact.abs()),
                "gelu({x}) = {y}, f64 gives {exact}"
            );
        }
    }

    #[test]
    fn gelu_adds_the_bias_per_row() {
        let mut rows: Vec<f32> = (0..3 * 19).map(|i| (i as f32 - 20.0) * 0.1).collect();
        let bias: Vec<f32> = (0..19).map(|i| i as f32 * 0.01).collect();
        let mut expected = rows.clone();
        for (i, v) in expected.iter_mut().enumerate() {
            *v += bias[i % 19];
        }
        bias_gelu_in_place(&mut expected, None);
        bias_gelu_in_place(&mut rows, Some(&bias));
        assert_eq!(rows, expected);
    }

    #[test]
    fn exp_is_within_2_ulp() {
        let xs: Vec<f32> = (-870_000..=880_000).map(|i| i as f32 * 1e-4).collect();
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (&x, &y) in xs.iter().zip(&ys) {
            let exact = libm::exp(x as f64);
            let ulp = (exact as f32).abs() * f32::EPSILON;
            assert!(
                ((y as f64) - exact).abs() <= 2.0 * ulp as f64,
                "exp({x}) = {y}, f64 gives {exact}"
            );
        }
    }
}
