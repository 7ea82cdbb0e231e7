//! Pillow's bilinear and bicubic `Image.resize`, pixel for pixel. timm and torchvision resize PIL
//! images, and transformers' slow processors do too, so a model's inputs are Pillow's pixels. The
//! `image` and `fast_image_resize` crates use the same filters with other arithmetic (f32 weights
//! or other fixed point, one rounding to 8 bits instead of two, another order of passes) and land
//! up to 9/255 away when enlarging, where Pillow clips bicubic overshoot between its passes. This
//! follows Pillow's arithmetic: per output index the filter's weights in f64 over the support
//! (widened by the scale when shrinking), normalized, then 22-bit fixed point; one axis at a time
//! with 8-bit pixels in between, in Pillow 13's order (the height first when it shrinks by more
//! than twice the pixels the width does). `tests/resize.rs` holds it to timm's transform through
//! Pillow.

use std::borrow::Cow;

use image::RgbImage;

/// Fractional bits of the fixed-point weights: 8 bits of pixel and 2 of headroom in an i32.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A separable resampling filter: its kernel and its support at scale 1.
#[derive(Clone, Copy)]
pub struct Filter {
    kernel: fn(f64) -> f64,
    support: f64,
}

/// The triangle filter of PIL's `BILINEAR`.
pub const BILINEAR: Filter = Filter {
    kernel: |x| (1.0 - x.abs()).max(0.0),
    support: 1.0,
};

/// The cubic convolution of PIL's `BICUBIC` (a = -0.5).
pub const BICUBIC: Filter = Filter {
    kernel: |x| {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    },
    support: 2.0,
};

/// The weights of one axis: for each output index, the first input index it reads and `taps`
/// fixed-point weights (zero past the input's edge).
struct Weights {
    first: Vec<usize>,
    taps: usize,
    fixed: Vec<i32>,
}

impl Weights {
    fn new(input: usize, output: usize, filter: Filter) -> Self {
        let scale = input as f64 / output as f64;
        let widen = scale.max(1.0);
        let support = filter.support * widen;
        let taps = support.ceil() as usize * 2 + 1;
        let mut first = Vec::with_capacity(output);
        let mut fixed = vec![0i32; output * taps];
        let mut weights = vec![0f64; taps];
        for (out, row) in fixed.chunks_exact_mut(taps).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // C's `(int)` casts: toward zero, then clipped to the image.
            let start = ((center - support + 0.5) as i64).max(0) as usize;
            let end = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let count = end.saturating_sub(start);
            let mut total = 0.0;
            for (i, w) in weights[..count].iter_mut().enumerate() {
                *w = (filter.kernel)(((start + i) as f64 - center + 0.5) / widen);
                total += *w;
            }
            for (w, f) in weights[..count].iter().zip(row.iter_mut()) {
                let w = if total != 0.0 { w / total } else { *w };
                let w = w * (1u32 << PRECISION_BITS) as f64;
                // Rounded half away from zero, as Pillow does.
                *f = if w < 0.0 {
                    (w - 0.5) as i32
                } else {
                    (w + 0.5) as i32
                };
            }
            first.push(start);
        }
        Weights { first, taps, fixed }
    }

    /// One output value from `taps` inputs at `stride` apart, each channel `channel` bytes in.
    fn apply(&self, out: usize, input: &[u8], stride: usize, channel: usize) -> u8 {
        let start = self.first[out];
        let weights = &self.fixed[out * self.taps..(out + 1) * self.taps];
        let mut sum: i32 = 1 << (PRECISION_BITS - 1);
        for (i, &w) in weights.iter().enumerate() {
            if w != 0 {
                sum += input[(start + i) * stride + channel] as i32 * w;
            }
        }
        (sum >> PRECISION_BITS).clamp(0, 255) as u8
    }
}

/// Resamples each row of `image` to `width` pixels.
fn rows(image: &RgbImage, width: u32, filter: Filter) -> RgbImage {
    let (w, h) = image.dimensions();
    let weights = Weights::new(w as usize, width as usize, filter);
    let mut out = RgbImage::new(width, h);
    let (row_in, row_out) = (w as usize * 3, width as usize * 3);
    for (src, dst) in image
        .as_raw()
        .chunks_exact(row_in)
        .zip(out.chunks_exact_mut(row_out))
    {
        for (x, pixel) in dst.chunks_exact_mut(3).enumerate() {
            for (c, value) in pixel.iter_mut().enumerate() {
                *value = weights.apply(x, src, 3, c);
            }
        }
    }
    out
}

/// Resamples each column of `image` to `height` pixels.
fn columns(image: &RgbImage, height: u32, filter: Filter) -> RgbImage {
    let (w, h) = image.dimensions();
    let weights = Weights::new(h as usize, height as usize, filter);
    let mut out = RgbImage::new(w, height);
    let stride = w as usize * 3;
    let input = image.as_raw();
    for (y, dst) in out.chunks_exact_mut(stride).enumerate() {
        for (i, value) in dst.iter_mut().enumerate() {
            *value = weights.apply(y, input, stride, i);
        }
    }
    out
}

/// `image` resized to `width` x `height` as Pillow's `Image.resize(size, filter)` does.
pub fn resize(image: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w, h) = image.dimensions();
    let shrink = |from: u32, to: u32| from as i64 - to as i64;
    let height_first = height < h && shrink(h, height) > 2 * shrink(w, width);
    let mut out = Cow::Borrowed(image);
    for height_pass in [height_first, !height_first] {
        if height_pass && out.height() != height {
            out = Cow::Owned(columns(&out, height, filter));
        } else if !height_pass && out.width() != width {
            out = Cow::Owned(rows(&out, width, filter));
        }
    }
    out.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (input, output) in [(451, 67), (28, 109), (260, 274), (7, 3)] {
            for filter in [BILINEAR, BICUBIC] {
                let weights = Weights::new(input, output, filter);
                for row in weights.fixed.chunks_exact(weights.taps) {
                    let total: i32 = row.iter().sum();
                    assert!((total - (1 << PRECISION_BITS)).abs() <= weights.taps as i32);
                }
                assert!(weights.first.iter().all(|&f| f < input));
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let image = RgbImage::from_pixel(13, 9, image::Rgb([200, 7, 255]));
        for (w, h) in [(5, 4), (40, 30), (13, 2), (1, 1)] {
            let out = resize(&image, w, h, BICUBIC);
            assert_eq!(out.dimensions(), (w, h));
            assert!(out.pixels().all(|p| p.0 == [200, 7, 255]));
        }
    }
}
