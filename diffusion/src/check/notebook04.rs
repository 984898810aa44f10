//! Notebook 04's exercises: the context mask and the guided noise.

use anyhow::Result;
use candle_core::{Device, Tensor};

use super::judge::{guarded, Judge, Values};
use super::{Failure, Verdict};
use crate::notebook04::{one_hot, N_CLASSES};
use crate::Rng;

/// Checks `get_context_mask(c, drop_prob, rng)`, which returns `(c_hot, c_mask)`: the one-hot
/// context `[N, 10]` of the labels `c`, and a mask of that shape whose every element is 1 with
/// probability `1 - drop_prob` (else 0), drawn independently. The mask is random, so the check
/// tests its values, its share of ones (within 5 standard deviations over 4,000 elements) and
/// that it is drawn per element, not per image.
pub fn context_mask(
    student: impl Fn(&Tensor, f64, &mut Rng) -> Result<(Tensor, Tensor)>,
) -> Verdict {
    let mut rng = Rng::from_entropy();
    let drop_prob = 0.1 + 0.2 * rng.unit();
    let n = 400;
    let labels: Vec<u32> = (0..n)
        .map(|_| rng.below(N_CLASSES).unwrap_or(0) as u32)
        .collect();
    let mut failures: Vec<Failure> = Vec::new();
    let mut passed = 0;
    let total = 4;
    let case = format!("{n} random labels, drop_prob = {drop_prob:.3}");
    let fail = |message: String, hint: Option<&str>| Failure {
        case: case.clone(),
        message,
        hint: hint.map(str::to_string),
    };
    let outcome = guarded(|| {
        let c = Tensor::new(labels.as_slice(), &Device::Cpu)?;
        let (hot, mask) = student(&c, drop_prob, &mut rng)?;
        Ok((
            Values::of(&hot)?,
            Values::of(&mask)?,
            Values::of(&one_hot(&c, N_CLASSES)?)?,
        ))
    });
    match outcome {
        Err(message) => failures.push(fail(message, None)),
        Ok((hot, mask, expected_hot)) => {
            // 1. the one-hot context
            if hot.close_to(&expected_hot) {
                passed += 1;
            } else {
                failures.push(fail(
                    format!("c_hot has shape {:?} and is not the one-hot encoding of c (expected shape {:?})", hot.shape, expected_hot.shape),
                    Some("c_hot[i] has a 1 at column c[i] and 0 elsewhere: F.one_hot(c, num_classes = 10)"),
                ));
            }
            // 2. the mask's shape and values
            let binary = mask.data.iter().all(|&v| v == 0.0 || v == 1.0);
            if mask.shape == expected_hot.shape && binary {
                passed += 1;
            } else {
                failures.push(fail(
                    format!("c_mask must be 0s and 1s of shape {:?}; got shape {:?}{}", expected_hot.shape, mask.shape, if binary { "" } else { " with other values" }),
                    Some("draw one Bernoulli value per element of c_hot: 1 (keep) with probability 1 - drop_prob"),
                ));
            }
            if mask.shape == expected_hot.shape && binary {
                // 3. drawn per element: some rows mix 0s and 1s
                let mixed = mask
                    .data
                    .chunks(N_CLASSES)
                    .filter(|row| row.iter().any(|&v| v != row[0]))
                    .count();
                if mixed > 0 {
                    passed += 1;
                } else {
                    failures.push(fail(
                        "every row of the mask is all 0s or all 1s".to_string(),
                        Some("the course draws the mask per element (torch.bernoulli on a tensor shaped like c_hot), not one value per image"),
                    ));
                }
                // 4. the share of ones
                let count = mask.data.len() as f64;
                let share = mask.data.iter().sum::<f64>() / count;
                let keep = 1.0 - drop_prob;
                let sd = (keep * drop_prob / count).sqrt();
                if (share - keep).abs() <= 5.0 * sd {
                    passed += 1;
                } else {
                    let hint = if (share - drop_prob).abs() <= 5.0 * sd {
                        "the mask is 1 where the context is *kept*: 1 with probability 1 - drop_prob (torch.bernoulli(ones - drop_prob))"
                    } else {
                        "each element is 1 with probability 1 - drop_prob"
                    };
                    failures.push(fail(
                        format!(
                            "{:.3} of the mask is 1, expected {keep:.3} +- {:.3}",
                            share,
                            5.0 * sd
                        ),
                        Some(hint),
                    ));
                }
            }
        }
    }
    let verdict = Verdict {
        check: "context_mask".to_string(),
        passed,
        total,
        failure: failures.into_iter().next(),
    };
    verdict.log();
    verdict
}

/// One input of the guided noise: the two predictions and the weight.
pub struct GuidanceInput {
    e_keep: Tensor,
    e_drop: Tensor,
    w: f64,
}

fn mix(i: &GuidanceInput, keep: f64, drop: f64) -> Result<Values> {
    let k = Values::of(&i.e_keep)?;
    let d = Values::of(&i.e_drop)?;
    let data = k
        .data
        .iter()
        .zip(&d.data)
        .map(|(a, b)| keep * a + drop * b)
        .collect();
    Ok(Values {
        shape: k.shape,
        data,
    })
}

/// Checks `guided_noise(e_keep, e_drop, w)`, classifier-free guidance:
/// `e_t = (1 + w) e_keep - w e_drop`, where `e_keep` is predicted with the class and `e_drop`
/// without.
pub fn guided_noise(student: impl Fn(&Tensor, &Tensor, f64) -> Result<Tensor>) -> Verdict {
    let mut rng = Rng::from_entropy();
    let mut judge = Judge::new("guided_noise", |i: &GuidanceInput| mix(i, 1.0 + i.w, -i.w))
        .mistake("the prediction *with* the class gets the weight 1 + w, the one without it -w", |i| mix(i, -i.w, 1.0 + i.w))
        .mistake("guidance extrapolates past the class prediction: (1 + w) e_keep - w e_drop, not an average", |i| mix(i, i.w, 1.0 - i.w))
        .mistake("the prediction without the class is subtracted: (1 + w) e_keep - w e_drop", |i| mix(i, 1.0 + i.w, i.w))
        .mistake("the class prediction's weight is 1 + w, not w", |i| mix(i, i.w, -i.w));
    let ws = [2.0, 0.5 + 3.0 * rng.unit(), -1.0];
    for w in ws {
        let input = (|| -> Result<GuidanceInput> {
            Ok(GuidanceInput {
                e_keep: rng.randn((3, 1, 4, 4), &Device::Cpu)?,
                e_drop: rng.randn((3, 1, 4, 4), &Device::Cpu)?,
                w,
            })
        })();
        if let Ok(input) = input {
            judge = judge.case(format!("3 images, w = {w:.3}"), input);
        }
    }
    judge.run(|i| Values::of(&student(&i.e_keep, &i.e_drop, i.w)?))
}
