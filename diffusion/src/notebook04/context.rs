//! The class as the network's context: a one-hot vector, and the mask that sometimes hides it.
//!
//! ```text
//! c_hot  = one_hot(label, 10)                       [N, 10]
//! c_mask ~ Bernoulli(1 - drop_prob), per element    [N, 10]
//! c      = c_hot * c_mask                           what the network sees
//! ```
//!
//! The mask is drawn for every element, as the course draws it, not once per image: the label's
//! 1 survives with probability `1 - drop_prob` and the other nine elements are 0 either way, so
//! with probability `drop_prob` the network sees no class at all and learns the unconditional
//! model alongside the conditional one.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor};

use crate::data::CLASS_NAMES;
use crate::Rng;

/// The number of classes of FashionMNIST, the context's length.
pub const N_CLASSES: usize = CLASS_NAMES.len();

/// The course's probability of hiding the class during training.
pub const DROP_PROB: f64 = 0.1;

/// `[N]` integer labels (U8, U32 or I64) to `[N, n_classes]` f32 one-hot vectors.
pub fn one_hot(labels: &Tensor, n_classes: usize) -> Result<Tensor> {
    let values = label_values(labels, n_classes)?;
    let mut hot = vec![0f32; values.len() * n_classes];
    for (i, &l) in values.iter().enumerate() {
        hot[i * n_classes + l] = 1.0;
    }
    Ok(Tensor::from_vec(
        hot,
        (values.len(), n_classes),
        labels.device(),
    )?)
}

/// The course's `get_context_mask(c, drop_prob)`: the one-hot context of `labels` (`[N]`) and a
/// mask of the same shape whose every element is 1 with probability `1 - drop_prob`.
pub fn get_context_mask(
    labels: &Tensor,
    drop_prob: f64,
    rng: &mut Rng,
) -> Result<(Tensor, Tensor)> {
    if !(0.0..=1.0).contains(&drop_prob) {
        bail!("drop_prob is a probability: it must be between 0 and 1, got {drop_prob}");
    }
    let c_hot = one_hot(labels, N_CLASSES)?;
    let keep = 1.0 - drop_prob;
    let mask: Vec<f32> = (0..c_hot.elem_count())
        .map(|_| f32::from(u8::from(rng.unit() < keep)))
        .collect();
    let c_mask = Tensor::from_vec(mask, c_hot.shape(), labels.device())?;
    Ok((c_hot, c_mask))
}

/// The labels as indices, checked: a 1-D integer tensor with values in `0..n_classes`.
fn label_values(labels: &Tensor, n_classes: usize) -> Result<Vec<usize>> {
    if labels.rank() != 1 {
        bail!(
            "labels must be a 1-D tensor with one class index per image, got shape {:?}",
            labels.dims()
        );
    }
    let values: Vec<i64> = match labels.dtype() {
        DType::U8 => labels.to_vec1::<u8>()?.into_iter().map(i64::from).collect(),
        DType::U32 => labels
            .to_vec1::<u32>()?
            .into_iter()
            .map(i64::from)
            .collect(),
        DType::I64 => labels.to_vec1::<i64>()?,
        other => bail!("labels must be integers (U8, U32 or I64), got {other:?}"),
    };
    values
        .into_iter()
        .map(|v| match usize::try_from(v) {
            Ok(l) if l < n_classes => Ok(l),
            _ => bail!(
                "label {v} is not a class: labels run from 0 to {}",
                n_classes - 1
            ),
        })
        .collect()
}

/// The class a student or the command line names: an index (`7`) or a name, any case, with or
/// without spaces, hyphens and slashes (`sneaker`, `Ankle boot`, `ankle-boot`, `t-shirt`, `top`).
pub fn class_index(name: &str) -> Result<usize> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let wanted = squash(name);
    let as_number = name.trim().parse::<i64>();
    if let Ok(i) = as_number {
        if (0..N_CLASSES as i64).contains(&i) {
            return Ok(i as usize);
        }
    }
    // "T-shirt/top" answers to "t-shirt" and "top" as well.
    let found = CLASS_NAMES.iter().position(|c| {
        let c = squash(c);
        c == wanted || (c == "tshirttop" && (wanted == "tshirt" || wanted == "top"))
    });
    match found {
        Some(i) if !wanted.is_empty() && as_number.is_err() => Ok(i),
        _ => bail!(
            "unknown class {name:?}: give an index 0-{} or one of {}",
            N_CLASSES - 1,
            CLASS_NAMES
                .iter()
                .map(|c| format!("{:?}", c.to_lowercase()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// One-hot contexts for the classes `classes`, with a mask of ones (nothing dropped), on `device`.
pub fn context_for(classes: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    let labels: Vec<u32> = classes.iter().map(|&c| c as u32).collect();
    let labels = Tensor::from_vec(labels, classes.len(), device)?;
    let c_hot = one_hot(&labels, N_CLASSES)?;
    let c_mask = c_hot.ones_like()?;
    Ok((c_hot, c_mask))
}
