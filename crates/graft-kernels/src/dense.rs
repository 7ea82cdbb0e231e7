//! Dense products on the gemm crate, `out (+)= x · W`, for row-major `x` and a weight in the
//! layout burn's `Linear` holds it (`[d_in, d_out]`, any strides): the one gemm call that
//! [`linear`](crate::linear) and the fused blocks share.

/// A `[d_in, d_out]` weight: element `(i, o)` is at `data[i·row_stride + o·col_stride]`.
#[derive(Clone, Copy)]
pub struct Weight<'a> {
    pub data: &'a [f32],
    pub d_in: usize,
    pub d_out: usize,
    pub row_stride: isize,
    pub col_stride: isize,
}

/// A weight and its optional bias over `d_out`.
#[derive(Clone, Copy)]
pub struct Dense<'a> {
    pub weight: Weight<'a>,
    pub bias: Option<&'a [f32]>,
}

/// Whether a product of `rows · d_in · d_out` multiply-adds is worth splitting between threads.
pub fn parallelism(rows: usize, weight: &Weight) -> gemm::Parallelism {
    if rows * weight.d_in * weight.d_out >= 192 * 192 * 192 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

impl Weight<'_> {
    /// `out[rows, d_out] (+)= x[rows, d_in] · self`; without `accumulate` every element of `out`
    /// is written and none is read.
    ///
    /// # Safety
    /// `out` must be valid for `rows · d_out` writes (and reads, with `accumulate`), and the
    /// strides must keep every element of the weight inside `data`.
    pub unsafe fn product(
        &self,
        x: &[f32],
        rows: usize,
        out: *mut f32,
        accumulate: bool,
        parallelism: gemm::Parallelism,
    ) {
        assert_eq!(x.len(), rows * self.d_in, "dense product: input rows");
        unsafe {
            gemm::gemm(
                rows,
                self.d_out,
                self.d_in,
                out,
                1,
                self.d_out as isize,
                accumulate,
                x.as_ptr(),
                1,
                self.d_in as isize,
                self.data.as_ptr(),
                self.col_stride,
                self.row_stride,
                if accumulate { 1.0f32 } else { 0.0f32 },
                1.0f32,
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}
