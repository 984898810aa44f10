//! Classifier-free guidance: one network, asked twice at every step, once with the class and
//! once without, and the two answers pushed apart by the weight `w`:
//!
//! ```text
//! e_t = (1 + w) * e_theta(x_t, t, c) - w * e_theta(x_t, t, no class)
//! ```
//!
//! `w = 0` is the conditional model alone, `w = -1` the unconditional one, and `w > 0`
//! exaggerates what the class changes. [`sample_w`] runs notebook 02's reverse process
//! ([`reverse_process`](crate::reverse_process)) with this `e_t`, the batch doubled as the
//! course does it: the first half keeps the context, the second half has `c_mask = 0`.

use anyhow::{bail, Result};
use candle_core::{Tensor, D};

use super::context::context_for;
use super::UNet;
use crate::display::ImageGrid;
use crate::{reverse_process, Network, Rng, Samples, Schedule};

/// The course's guidance weights, one row of the grid each.
pub const W_TESTS: [f64; 7] = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0];

/// The weight `diffusion sample` uses for notebook 04's network unless told otherwise: of the
/// course's weights, the one that measured best on class and realism (walkthrough 04).
pub const DEFAULT_W: f64 = 2.0;

/// The course keeps a snapshot every `STORE_FREQ` steps (and at each of the last ten).
pub const STORE_FREQ: usize = 10;

/// `(1 + w) * e_keep - w * e_drop`, with one weight per image: `e_keep` and `e_drop` are
/// `[N, C, H, W]`, `w` is `[N]`.
pub fn guided_noise(e_keep: &Tensor, e_drop: &Tensor, w: &Tensor) -> Result<Tensor> {
    let n = e_keep.dim(0)?;
    if e_drop.dims() != e_keep.dims() || w.dims() != [n] {
        bail!(
            "guidance needs e_keep and e_drop of one shape and one w per image: got {:?}, {:?} and w {:?}",
            e_keep.dims(),
            e_drop.dims(),
            w.dims()
        );
    }
    let w = w.reshape((n, 1, 1, 1))?; // [N, 1, 1, 1]: one weight per image, broadcast
    let keep = e_keep.broadcast_mul(&(&w + 1.0)?)?; // (1 + w) e_keep
    let drop = e_drop.broadcast_mul(&w)?; // w e_drop
    Ok((keep - drop)?)
}

/// Guided samples laid out as the course's grid: one row per weight, one column per class.
#[derive(Debug, Clone)]
pub struct GuidedSamples {
    /// `images` `[ws.len() * classes.len(), C, H, W]` (row `i` is `ws[i]`), and the snapshots.
    pub samples: Samples,
    pub ws: Vec<f64>,
    pub classes: Vec<usize>,
}

impl GuidedSamples {
    /// The final images as a grid, a row per weight.
    pub fn grid(&self) -> Result<ImageGrid> {
        ImageGrid::new(&self.samples.images, self.classes.len())
    }

    /// The images of row `i` (weight `ws[i]`): `[classes.len(), C, H, W]`.
    pub fn row(&self, i: usize) -> Result<Tensor> {
        let k = self.classes.len();
        Ok(self.samples.images.narrow(0, i * k, k)?)
    }

    /// Each snapshot as a grid of the same layout, each image enlarged `scale` times: the
    /// frames of an animation.
    pub fn frame_grids(&self, scale: usize) -> Result<Vec<ImageGrid>> {
        self.samples
            .frames
            .iter()
            .map(|f| Ok(ImageGrid::new(&f.clamp(-1f32, 1f32)?, self.classes.len())?.scale(scale)))
            .collect()
    }
}

/// The course's `sample_w`: for every weight in `ws` and every class in `classes`, one image
/// drawn with guided noise ([`guided_noise`]), keeping a snapshot after every `t` with
/// `t % store_freq == 0` or `t < 10` (none when `store_freq` is 0). Rows are weights, columns
/// classes.
pub fn sample_w(
    model: &UNet,
    schedule: &Schedule,
    classes: &[usize],
    ws: &[f64],
    store_freq: usize,
    rng: &mut Rng,
) -> Result<GuidedSamples> {
    if classes.is_empty() || ws.is_empty() {
        bail!("sample_w needs at least one class and one weight");
    }
    let per_image_classes: Vec<usize> = ws.iter().flat_map(|_| classes.iter().copied()).collect();
    let per_image_w: Vec<f32> = ws
        .iter()
        .flat_map(|&w| classes.iter().map(move |_| w as f32))
        .collect();
    let keep = |t: usize| store_freq > 0 && (t.is_multiple_of(store_freq) || t < 10);
    let samples = guided(model, schedule, &per_image_classes, &per_image_w, keep, rng)?;
    Ok(GuidedSamples {
        samples,
        ws: ws.to_vec(),
        classes: classes.to_vec(),
    })
}

/// `n` images of one class without guidance (`w = 0`: the conditional model alone), keeping
/// `ncols` snapshots for a strip as [`sample_images`](crate::sample_images) does: the
/// training preview.
pub fn sample_class(
    model: &UNet,
    schedule: &Schedule,
    class: usize,
    n: usize,
    ncols: usize,
    rng: &mut Rng,
) -> Result<Samples> {
    let keep = crate::sample::strip_steps(schedule.len(), ncols.max(1));
    let classes = vec![class; n];
    let keep = |t: usize| ncols > 0 && keep.contains(&t);
    guided(model, schedule, &classes, &vec![0.0; n], keep, rng)
}

/// The reverse process with `e_t` guided per image (`classes[i]`, `ws[i]`). Weights that are
/// all 0 need no unconditional half.
fn guided(
    model: &UNet,
    schedule: &Schedule,
    classes: &[usize],
    ws: &[f32],
    keep: impl Fn(usize) -> bool,
    rng: &mut Rng,
) -> Result<Samples> {
    let n = classes.len();
    if n == 0 {
        bail!("asked for 0 images: n must be at least 1");
    }
    if model.config.t != schedule.len() {
        bail!(
            "the model was built for T = {} but the schedule has {} steps",
            model.config.t,
            schedule.len()
        );
    }
    if let Some(c) = classes.iter().find(|&&c| c >= model.config.n_classes) {
        bail!(
            "class {c} is not one of the network's {} classes (0 to {})",
            model.config.n_classes,
            model.config.n_classes - 1
        );
    }
    let device = schedule.device();
    let (c_hot, c_mask) = context_for(classes, device)?; // [n, 10] each
    let w = Tensor::from_slice(ws, n, device)?; // [n]
    let unguided = ws.iter().all(|&w| w == 0.0);
    let [ch, h, wd] = model.image_shape();
    let x_start = rng.randn((n, ch, h, wd), device)?;
    reverse_process(
        schedule,
        x_start,
        keep,
        |x, t| match unguided {
            true => model.forward(x, t, &c_hot, &c_mask),
            false => guided_prediction(model, x, t, &c_hot, &w),
        },
        |_, x| rng.randn_like(x),
    )
}

/// The noise of one step of [`sample_w`]: the batch doubled, the first half with the contexts
/// `c_hot` (`[N, 10]`), the second half with `c_mask = 0`, one network call, then
/// [`guided_noise`] with the weights `w` (`[N]`).
pub fn guided_prediction(
    model: &UNet,
    x_t: &Tensor,
    t: &Tensor,
    c_hot: &Tensor,
    w: &Tensor,
) -> Result<Tensor> {
    let n = x_t.dim(0)?;
    let x2 = Tensor::cat(&[x_t, x_t], 0)?; // [2N, C, H, W]
    let t2 = Tensor::cat(&[t, t], 0)?; // [2N]
    let c2 = Tensor::cat(&[c_hot, c_hot], 0)?; // [2N, 10]
    let keep = c_hot.ones_like()?;
    let mask2 = Tensor::cat(&[&keep, &keep.zeros_like()?], 0)?; // [2N, 10]: 1s, then 0s
    let e = model.forward(&x2, &t2, &c2, &mask2)?; // [2N, C, H, W]
    guided_noise(&e.narrow(0, 0, n)?, &e.narrow(0, n, n)?, w)
}

/// The mean distance of each image of `images` (`[N, ...]`) to the others, in pixels: the
/// spread within a set of samples (0 when all are the same).
pub fn mean_pairwise_distance(images: &Tensor) -> Result<f64> {
    let n = images.dim(0)?;
    if n < 2 {
        bail!("the spread of a set needs at least 2 images, got {n}");
    }
    let x = images.flatten_from(1)?.to_dtype(candle_core::DType::F64)?; // [N, P]
    let sq = x.sqr()?.sum(D::Minus1)?; // [N]
    let gram = x.matmul(&x.t()?)?; // [N, N]
    let d2 = (sq.unsqueeze(1)?.broadcast_add(&sq.unsqueeze(0)?)? - (gram * 2.0)?)?; // [N, N]
    let d = d2.relu()?.sqrt()?.sum_all()?.to_scalar::<f64>()?;
    Ok(d / (n * (n - 1)) as f64)
}
