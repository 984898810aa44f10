//! The frame the hand-made ops of this crate share: candle's [`CustomOp3`] seen through the
//! values of three contiguous CPU `f32` tensors, so that each op states only its arithmetic.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

use super::gemm::cpu_f32;

/// The gradients of an op's three inputs (`None` for an input autograd does not track).
pub(crate) type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);

/// An op of three CPU `f32` tensors.
pub(crate) trait F32Op3: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// The output's values and shape for the inputs' values and layouts.
    fn forward(&self, inputs: [(&[f32], &Layout); 3]) -> Result<(Vec<f32>, Shape)>;

    /// The inputs' gradients, given the output `res` and its gradient `grad`.
    fn backward(&self, inputs: [&Tensor; 3], res: &Tensor, grad: &Tensor) -> Result<Grads3>;
}

/// An [`F32Op3`] as candle's custom op.
struct CpuOp<T>(T);

impl<T: F32Op3> CustomOp3 for CpuOp<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let inputs = [
            (cpu_f32(s1, l1)?, l1),
            (cpu_f32(s2, l2)?, l2),
            (cpu_f32(s3, l3)?, l3),
        ];
        let (y, shape) = self.0.forward(inputs)?;
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<Grads3> {
        self.0.backward([a, b, c], res, grad)
    }
}

/// `op(a, b, c)`, the inputs made contiguous first.
pub(crate) fn apply(op: impl F32Op3, [a, b, c]: [&Tensor; 3]) -> Result<Tensor> {
    a.contiguous()?
        .apply_op3(&b.contiguous()?, &c.contiguous()?, CpuOp(op))
}

/// The gradient of `t`, with the values `f` computes and the shape of `t`, when autograd tracks
/// `t`; else `None`, without running `f`.
pub(crate) fn grad_for(t: &Tensor, f: impl FnOnce() -> Result<Vec<f32>>) -> Result<Option<Tensor>> {
    if !t.track_op() {
        return Ok(None);
    }
    Ok(Some(Tensor::from_vec(f()?, t.shape(), t.device())?))
}
