//! The fused Cube ops under burn's `Autodiff`: each forward runs the fused kernel, keeps what
//! its backward needs (inputs and row statistics, never the `[seq, seq]` scores) and registers a
//! burn-autodiff `Backward` step that runs the backward kernels, the way burn-autodiff writes its
//! own ops (`prepare` with the inputs' node guards, `compute_bound`, `stateful`,
//! `grads.register`). The `backend_extension` macro routes autodiff tensors here but derives no
//! gradient itself.
//!
//! Absent operands (tensors with no elements) never require gradients, so their parents are
//! `None` and nothing is registered for them.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, broadcast_shape};
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Backend, Shape, Slice, TensorMetadata};

use super::{CubeFusedOps, CubeKernels};

/// Sums a `[..., d]` gradient over its rows: the gradient of a bias added to every row.
fn sum_rows<B: Backend>(grad: FloatTensor<B>) -> FloatTensor<B> {
    let shape = grad.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d.max(1);
    let grad = B::float_reshape(grad, Shape::new([rows, d]));
    B::float_reshape(B::float_sum_dim(grad, 0), Shape::new([d]))
}

#[derive(Debug)]
struct GeluBackward;

impl<B: CubeKernels> Backward<B, 2> for GeluBackward {
    /// `x` and the bias.
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_parent, bias_parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, bias) = ops.state;
        let dx = <B as CubeKernels>::gelu_backward(x, bias, grad);
        if let Some(node) = bias_parent {
            grads.register::<B>(node.id, sum_rows::<B>(dx.clone()));
        }
        if let Some(node) = x_parent {
            grads.register::<B>(node.id, dx);
        }
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: CubeKernels> Backward<B, 5> for LayerNormBackward {
    /// `x`, the bias, the residual, `gamma` and the row statistics.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
        FloatTensor<B>,
    );

    fn backward(self, ops: Ops<Self::State, 5>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [
            x_parent,
            bias_parent,
            residual_parent,
            gamma_parent,
            beta_parent,
        ] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, bias, residual, gamma, stats) = ops.state;
        let (ds, dgamma, dbeta) =
            <B as CubeKernels>::layer_norm_backward(x, bias, residual, gamma, stats, grad);
        if let Some(node) = gamma_parent {
            grads.register::<B>(node.id, dgamma);
        }
        if let Some(node) = beta_parent {
            grads.register::<B>(node.id, dbeta);
        }
        if let Some(node) = bias_parent {
            grads.register::<B>(node.id, sum_rows::<B>(ds.clone()));
        }
        if let Some(node) = residual_parent {
            grads.register::<B>(node.id, ds.clone());
        }
        if let Some(node) = x_parent {
            grads.register::<B>(node.id, ds);
        }
    }
}

/// What the attention backward keeps: the inputs, the output and its row statistics.
#[derive(Clone, Debug)]
struct AttentionSaved<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    mask: BoolTensor<B>,
    bias: FloatTensor<B>,
    out: FloatTensor<B>,
    stats: FloatTensor<B>,
    heads: usize,
    scale: f64,
}

#[derive(Debug)]
struct AttentionBackward;

impl<B: CubeKernels> Backward<B, 4> for AttentionBackward {
    type State = AttentionSaved<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [q_parent, k_parent, v_parent, bias_parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let saved = ops.state;
        let width = saved.q.shape()[2];
        let bias_shape = saved.bias.shape();
        let (dq, dkv, dscores) = <B as CubeKernels>::attention_backward(
            saved.q,
            saved.k,
            saved.v,
            saved.mask,
            saved.bias,
            saved.out,
            saved.stats,
            grad,
            saved.heads,
            saved.scale,
            bias_parent.is_some(),
        );
        let columns =
            |range: core::ops::Range<usize>| [Slice::from(..), Slice::from(..), range.into()];
        if let Some(node) = bias_parent {
            grads.register::<B>(node.id, broadcast_shape::<B>(dscores, &bias_shape));
        }
        if let Some(node) = k_parent {
            grads.register::<B>(node.id, B::float_slice(dkv.clone(), &columns(0..width)));
        }
        if let Some(node) = v_parent {
            grads.register::<B>(node.id, B::float_slice(dkv, &columns(width..2 * width)));
        }
        if let Some(node) = q_parent {
            grads.register::<B>(node.id, dq);
        }
    }
}

impl<B: CubeKernels, C: CheckpointStrategy> CubeFusedOps for Autodiff<B, C> {
    fn bias_gelu(x: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let prep = GeluBackward.prepare::<C>([x.node(), bias.node()]);
        match prep.compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, bias) = (x.into_primitive(), bias.into_primitive());
                let out = <B as CubeKernels>::gelu_forward(x.clone(), bias.clone());
                prep.finish((x, bias), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(<B as CubeKernels>::gelu_forward(
                x.into_primitive(),
                bias.into_primitive(),
            )),
        }
    }

    fn add_layer_norm(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let nodes = [&x, &bias, &residual, &gamma, &beta].map(|t| t.node());
        let [x, bias, residual, gamma, beta] =
            [x, bias, residual, gamma, beta].map(|t| t.into_primitive());
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, stats) = <B as CubeKernels>::layer_norm_forward(
                    x.clone(),
                    bias.clone(),
                    residual.clone(),
                    gamma.clone(),
                    beta,
                    epsilon,
                );
                prep.finish((x, bias, residual, gamma, stats), out)
            }
            OpsKind::UnTracked(prep) => {
                let (out, _) =
                    <B as CubeKernels>::layer_norm_forward(x, bias, residual, gamma, beta, epsilon);
                prep.finish(out)
            }
        }
    }

    fn attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        mask: BoolTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        let nodes = [&q, &k, &v, &bias].map(|t| t.node());
        let [q, k, v, bias] = [q, k, v, bias].map(|t| t.into_primitive());
        match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, stats) = <B as CubeKernels>::attention_forward(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    mask.clone(),
                    bias.clone(),
                    heads,
                    scale,
                );
                let saved = AttentionSaved {
                    q,
                    k,
                    v,
                    mask,
                    bias,
                    out: out.clone(),
                    stats,
                    heads,
                    scale,
                };
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => {
                let (out, _) =
                    <B as CubeKernels>::attention_forward(q, k, v, mask, bias, heads, scale);
                prep.finish(out)
            }
        }
    }
}
