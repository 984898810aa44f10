//! The question set `ddpm-math`: the 19 review questions on DDPM mathematics
//! (`answers/ddpm-math.md`).
//!
//! `qN` is always the written explanation (graded by hand); `qNa`, `qNb`, ... are the numbers,
//! shapes and choices of question N, computed with [`crate::theory::ddpm`] when the grader runs.

use anyhow::Result;

use super::question::{any_of, choice_shown, free, Expected, Question, QuestionSet};
use crate::theory::ddpm as th;
use diffusion::settings::{BATCH_SIZE, EPOCHS, T};

/// Relative tolerance of real-valued answers: four significant digits.
const REL: f64 = 1e-3;
/// Absolute slack for real-valued answers (matters only near zero).
const ABS: f64 = 1e-9;
/// Images in the FashionMNIST training split, as stated in question 18b.
const TRAIN_IMAGES: usize = 60_000;

fn num(value: f64) -> Result<Expected> {
    Ok(Expected::Number {
        value,
        abs_tol: ABS,
        rel_tol: REL,
    })
}

/// A value close to 1 where four significant digits are not enough: absolute tolerance `abs`.
fn num_abs(value: f64, abs: f64) -> Result<Expected> {
    Ok(Expected::Number {
        value,
        abs_tol: abs,
        rel_tol: 0.0,
    })
}

fn count(value: usize) -> Result<Expected> {
    Ok(Expected::Number {
        value: value as f64,
        abs_tol: 1e-6,
        rel_tol: 0.0,
    })
}

fn shape(dims: &[usize]) -> Result<Expected> {
    Ok(Expected::Vector {
        values: dims.iter().map(|d| *d as f64).collect(),
        abs_tol: 1e-6,
        rel_tol: 0.0,
    })
}

fn choice(accepted: &[&str], shown: &str) -> Result<Expected> {
    Ok(choice_shown(accepted, shown))
}

fn q(
    id: &'static str,
    prompt: &'static str,
    expected: fn() -> Result<Expected>,
    hint: &'static str,
    link: &'static str,
) -> Question {
    Question {
        id,
        prompt,
        expected,
        hint,
        link,
    }
}

/// The set `ddpm-math`.
pub fn set() -> QuestionSet {
    QuestionSet {
        id: "ddpm-math",
        title: "DDPM mathematics: 19 review questions on notebook 02",
        questions,
    }
}

fn questions() -> Vec<Question> {
    vec![
        q("q1", "What's the difference between forward and reverse diffusion?", free,
          "Say which process is fixed and which is learned, and what each one maps to what.",
          "answers/ddpm-math.md#q1"),
        q("q2", "What does the Markov property mean in practice?", free,
          "Each forward step looks only at the previous image; say what that buys and what it does not.",
          "answers/ddpm-math.md#q2"),
        q("q3", "Why do we need T = 150 timesteps?", free,
          "Look at how T is defined in the notebook (rows times columns) and at what a_bar reaches.",
          "answers/ddpm-math.md#q3"),
        q("q3a", "a_bar[T-1] of the course schedule (signal share of the variance at the last step)",
          || num(th::a_bar(&th::course_values()?, T - 1)?),
          "Multiply all 150 values 1 - B[t]; it is far from 0.",
          "answers/ddpm-math.md#q3"),
        q("q3b", "Mean of the 150 betas of the course schedule",
          || num(th::mean(&th::course_values()?.b)),
          "The betas form an arithmetic sequence from 0.0001 to 0.02; 1/T is not a beta.",
          "answers/ddpm-math.md#q3"),
        q("q3c", "Network evaluations needed to draw one image with the DDPM sampler",
          || count(th::sampling_network_calls(T)),
          "The sampler runs t = T-1 down to 0 and calls the network at every step.",
          "answers/ddpm-math.md#q3"),
        q("q4", "What's the reparameterization trick?", free,
          "Separate writing a Gaussian sample as mean + std * noise from the closed form q(x_t | x_0).",
          "answers/ddpm-math.md#q4"),
        q("q4a", "Average number of one-step noising operations to reach x_t one step at a time, t uniform on 0..T-1",
          || num(th::mean_sequential_noising_steps(T)),
          "Reaching index t takes t + 1 steps; average over t = 0..149.",
          "answers/ddpm-math.md#q4"),
        q("q4b", "Network evaluations per training example, with or without the closed form",
          || count(th::counted_network_calls(T, 1)?.0),
          "The closed form only replaces cheap elementwise steps; the network still runs once.",
          "answers/ddpm-math.md#q4"),
        q("q5", "Why these specific coefficients in the forward process?", free,
          "Work out the variance of x_t under the update rule and under the alternatives.",
          "answers/ddpm-math.md#q5"),
        q("q5a", "Var(x_{T-1}) after the 150 course steps x_t = sqrt(1-B) x_{t-1} + sqrt(B) e, starting from Var = 1",
          || num(th::variance_after(&th::course_values()?.b, 1.0, th::UpdateRule::VariancePreserving)),
          "(1 - B) * 1 + B = 1 at every step.",
          "answers/ddpm-math.md#q5"),
        q("q5b", "Same with x_t = x_{t-1} + sqrt(B) e",
          || num(th::variance_after(&th::course_values()?.b, 1.0, th::UpdateRule::Additive)),
          "The variance grows by B each step: 1 + sum of the betas.",
          "answers/ddpm-math.md#q5"),
        q("q5c", "Same with x_t = (1-B) x_{t-1} + sqrt(B) e",
          || num(th::variance_after(&th::course_values()?.b, 1.0, th::UpdateRule::Shrink)),
          "v -> (1 - B)^2 v + B settles near 1 / (2 - B), not at 0.",
          "answers/ddpm-math.md#q5"),
        q("q5d", "SNR(T-1) = a_bar / (1 - a_bar) at the last step of the course schedule",
          || { let v = th::course_values()?; num(th::snr(&v, T - 1)?) },
          "a_bar[149] is about 0.22, so the SNR is well above 0.",
          "answers/ddpm-math.md#q5"),
        q("q6", "What's the difference between alpha_t and alpha_bar_t?", free,
          "One is a single step's factor, the other the product up to t.",
          "answers/ddpm-math.md#q6"),
        q("q6a", "a_bar after 100 steps (index 99) of the course schedule",
          || num(th::a_bar(&th::course_values()?, 99)?),
          "About half of the variance is still signal after 100 steps.",
          "answers/ddpm-math.md#q6"),
        q("q6b", "a_bar after 3 steps (index 2), to 6 decimals",
          || num_abs(th::a_bar(&th::course_values()?, 2)?, 5e-6),
          "Use the real betas 0.0001, 0.0002336, 0.0003671.",
          "answers/ddpm-math.md#q6"),
        q("q6c", "a_bar at the last step (index 149)",
          || num(th::a_bar(&th::course_values()?, T - 1)?),
          "The product of 1 - B[t] over all 150 steps.",
          "answers/ddpm-math.md#q6"),
        q("q7", "How does the reverse mean formula work?", free,
          "Start from Bayes' rule for q(x_{t-1} | x_t, x_0) and substitute x_0 from the closed form.",
          "answers/ddpm-math.md#q7"),
        q("q7a", "pred_noise_coeff[149] = (1 - a[149]) / sqrt(1 - a_bar[149])",
          || num(th::reverse_mean_coeffs(&th::course_values()?, T - 1)?.1),
          "0.02 divided by sqrt(1 - a_bar[149]).",
          "answers/ddpm-math.md#q7"),
        q("q7b", "sqrt_a_inv[149] = 1 / sqrt(a[149])",
          || num(th::reverse_mean_coeffs(&th::course_values()?, T - 1)?.0),
          "a[149] = 0.98.",
          "answers/ddpm-math.md#q7"),
        q("q7c", "Posterior variance beta_tilde at t = 149: (1 - a_bar[148]) / (1 - a_bar[149]) * B[149]",
          || num(th::posterior_variance(&th::course_values()?, T - 1)?),
          "Slightly below B[149] = 0.02.",
          "answers/ddpm-math.md#q7"),
        q("q8", "Why predict noise instead of the clean image?", free,
          "The two targets are tied by a fixed linear map; compare the loss weights per timestep.",
          "answers/ddpm-math.md#q8"),
        q("q8a", "Weight (1 - a_bar) / a_bar that an image MSE puts on the noise error at t = 149",
          || num(th::x0_loss_weight(&th::course_values()?, T - 1)?),
          "x_0 error = sqrt((1 - a_bar) / a_bar) times the noise error.",
          "answers/ddpm-math.md#q8"),
        q("q8b", "The same weight at t = 0",
          || num(th::x0_loss_weight(&th::course_values()?, 0)?),
          "At t = 0, 1 - a_bar = B[0] = 0.0001.",
          "answers/ddpm-math.md#q8"),
        q("q9", "How does time conditioning actually work in the network?", free,
          "Follow t / T through temb_1 and temb_2 to the decoder additions.",
          "answers/ddpm-math.md#q9"),
        q("q9a", "The time input the network receives for t = 149",
          || num(th::normalized_timestep(T - 1, T)?),
          "The network is fed t / T.",
          "answers/ddpm-math.md#q9"),
        q("q9b", "Which timestep gives the noisier x_t: t = 1 or t = 149?",
          || choice(&["149", "t = 149", "t=149", "t 149"], "t = 149"),
          "a_bar decreases with t: larger t means more noise.",
          "answers/ddpm-math.md#q9"),
        q("q10", "What's the mathematical relationship between noise schedules?", free,
          "Compare a_bar, SNR and the reverse coefficients of the linear and cosine schedules.",
          "answers/ddpm-math.md#q10"),
        q("q10a", "max / min of pred_noise_coeff over t for the linear course schedule",
          || num(ratio(&th::course_values()?.pred_noise_coeff)),
          "The coefficient grows from 0.01 to about 0.0226.",
          "answers/ddpm-math.md#q10"),
        q("q10b", "max / min of pred_noise_coeff for the cosine schedule with T = 150",
          || num(ratio(&th::cosine_values(T)?.pred_noise_coeff)),
          "The cosine schedule's last beta is clipped at 0.999.",
          "answers/ddpm-math.md#q10"),
        q("q10c", "a_bar at index 74 of the cosine schedule with T = 150",
          || num(th::a_bar(&th::cosine_values(T)?, 74)?),
          "a_bar = f(t+1) / f(0) with f = cos^2(((t/T + s) / (1 + s)) pi / 2), s = 0.008.",
          "answers/ddpm-math.md#q10"),
        q("q11", "How does the ELBO connect to the simple loss?", free,
          "Write each KL term as a weighted noise MSE and see which timesteps the weight favours.",
          "answers/ddpm-math.md#q11"),
        q("q11a", "ELBO weight B^2 / (2 sigma^2 a (1 - a_bar)) at index t = 1 (0-indexed as in the notebook: the second step), sigma^2 = B",
          || { let v = th::course_values()?; num(th::elbo_weight(&v, 1, v.b[1])?) },
          "With sigma^2 = B the weight is B / (2 a (1 - a_bar)).",
          "answers/ddpm-math.md#q11"),
        q("q11b", "The same weight at index t = 149 (the last step)",
          || { let v = th::course_values()?; num(th::elbo_weight(&v, T - 1, v.b[T - 1])?) },
          "0.02 / (2 * 0.98 * (1 - a_bar[149])).",
          "answers/ddpm-math.md#q11"),
        q("q11c", "Relative to the simple loss, does the ELBO weight small t or large t more?",
          || choice(&["small t", "small", "low t", "early", "early timesteps", "low noise", "small timesteps"],
                    "small t (little noise)"),
          "Compare q11a with q11b.",
          "answers/ddpm-math.md#q11"),
        q("q12", "What's the connection to score-based models?", free,
          "Relate the best noise prediction E[e | x_t] to the score of q(x_t).",
          "answers/ddpm-math.md#q12"),
        q("q12a", "Factor c in score = -c * e_hat at t = 149, c = 1 / sqrt(1 - a_bar[149])",
          || num(th::score_scale(&th::course_values()?, T - 1)?),
          "1 / sqrt(1 - 0.2192).",
          "answers/ddpm-math.md#q12"),
        q("q12b", "Langevin step x + d * score + sqrt(2 d) z with d = B[149]: its noise std over the DDPM step's sqrt(B[149])",
          || { let b = th::course_values()?.b[T - 1]; num(th::langevin_noise_std(b) / b.sqrt()) },
          "In this form of the Langevin step the noise std is sqrt(2 d).",
          "answers/ddpm-math.md#q12"),
        q("q13", "Why normalize timesteps to [0, 1] before embedding?", free,
          "Say what dividing by T changes (the scale) and what it does not (ratios between timesteps).",
          "answers/ddpm-math.md#q13"),
        q("q13a", "Largest value of t / T the network ever receives",
          || num(th::normalized_timestep(T - 1, T)?),
          "Timesteps stop at T - 1 = 149.",
          "answers/ddpm-math.md#q13"),
        q("q13b", "Standard deviation of (t - T/2) / (T/6) for t uniform on 0..T-1",
          || {
              let scale = T as f64 / 6.0;
              Ok(any_of(vec![
                  ("population std", num(th::uniform_timestep_std(T) / scale)?),
                  ("sample std of the 150 values", num(th::sample_std(&th::timesteps(T)) / scale)?),
              ]))
          },
          "A uniform variable on 0..149 has std sqrt((150^2 - 1) / 12); divide by T/6 = 25.",
          "answers/ddpm-math.md#q13"),
        q("q13c", "Ratio of first-layer weight gradients for t = 149 and t = 1 after dividing t by T",
          || num(th::normalized_timestep(T - 1, T)? / th::normalized_timestep(1, T)?),
          "Dividing both inputs by T leaves their ratio unchanged.",
          "answers/ddpm-math.md#q13"),
        q("q14", "How does tensor broadcasting work in the forward process?", free,
          "Align shapes on the right; a dimension of 1 stretches.",
          "answers/ddpm-math.md#q14"),
        q("q14a", "Shape of sqrt_a_bar[t, None, None, None] * x_0 for x_0 of shape [128, 1, 16, 16]",
          || shape(&th::broadcast_shape(&[BATCH_SIZE, 1, 1, 1], &[BATCH_SIZE, 1, 16, 16])?),
          "[128, 1, 1, 1] against [128, 1, 16, 16].",
          "answers/ddpm-math.md#q14"),
        q("q14b", "Shape of sqrt_a_bar[t, None, None] * x_0 (only two Nones)",
          || shape(&th::broadcast_shape(&[BATCH_SIZE, 1, 1], &[BATCH_SIZE, 1, 16, 16])?),
          "[128, 1, 1] lines up as [1, 128, 1, 1]: no error, a wrong shape.",
          "answers/ddpm-math.md#q14"),
        q("q14c", "Number of elements of the result in q14a",
          || count(th::numel(&th::broadcast_shape(&[BATCH_SIZE, 1, 1, 1], &[BATCH_SIZE, 1, 16, 16])?)),
          "128 * 1 * 16 * 16.",
          "answers/ddpm-math.md#q14"),
        q("q15", "What happens during the iterative sampling loop?", free,
          "Describe one step of reverse_q and what the loop starts from.",
          "answers/ddpm-math.md#q15"),
        q("q15a", "Signal amplitude sqrt(a_bar[149]) that x_{T-1} keeps in training (the sampler starts from pure noise)",
          || num(th::signal_amplitude(&th::course_values()?, T - 1)?),
          "sqrt(0.2192).",
          "answers/ddpm-math.md#q15"),
        q("q15b", "Noise share 1 - a_bar[t] of x_t at t = 60",
          || num(th::noise_share(&th::course_values()?, 60)?),
          "a_bar[60] is about 0.778.",
          "answers/ddpm-math.md#q15"),
        q("q16", "Why add random noise in reverse diffusion?", free,
          "Compare the reverse step's noise with the posterior variance, and say what the last step does.",
          "answers/ddpm-math.md#q16"),
        q("q16a", "Std of the noise reverse_q adds at t = 149 in the notebook",
          || num(th::notebook_reverse_noise_std(&th::course_values()?, T - 1)?),
          "reverse_q uses sqrt(B[t - 1]), so t = 149 uses B[148].",
          "answers/ddpm-math.md#q16"),
        q("q16b", "Std of the noise reverse_q adds at t = 1",
          || num(th::notebook_reverse_noise_std(&th::course_values()?, 1)?),
          "t = 1 uses B[0] = 0.0001.",
          "answers/ddpm-math.md#q16"),
        q("q16c", "Std of the noise reverse_q adds at t = 0",
          || num(th::notebook_reverse_noise_std(&th::course_values()?, 0)?),
          "The last step returns the mean.",
          "answers/ddpm-math.md#q16"),
        q("q17", "How does this relate to real-world noise removal?", free,
          "Contrast a known synthetic corruption with unknown sensor noise, and recovery with generation.",
          "answers/ddpm-math.md#q17"),
        q("q18", "What makes the reverse process learnable?", free,
          "Small steps make each reverse step nearly Gaussian; the training pairs come for free.",
          "answers/ddpm-math.md#q18"),
        q("q18a", "Factor sqrt(1 - B[0]) on x_{t-1} in the first forward step, to 6 decimals",
          || num_abs(th::one_step_coeffs(th::course_values()?.b[0]).0, 5e-6),
          "sqrt(0.9999), not 0.9999.",
          "answers/ddpm-math.md#q18"),
        q("q18b", "(image, t) pairs seen in training: 60,000 images, batch 128 (last partial batch dropped), 3 epochs",
          || count(th::training_examples(TRAIN_IMAGES, BATCH_SIZE, EPOCHS)?),
          "floor(60000 / 128) = 468 steps per epoch.",
          "answers/ddpm-math.md#q18"),
        q("q19", "How does the model maintain image structure during generation?", free,
          "Tie the answer to what the loss rewards and to the U-Net's skips and time inputs.",
          "answers/ddpm-math.md#q19"),
    ]
}

/// `max / min` of positive values.
fn ratio(values: &[f64]) -> f64 {
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    max / min
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn read(rel: &str) -> String {
        std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// The verdict the grader gives `value` (a TOML value) for question `id`.
    fn verdict(id: &str, value: Option<&toml::Value>) -> &'static str {
        let mut table = toml::Table::new();
        if let Some(v) = value {
            table.insert(id.to_string(), v.clone());
        }
        let report = crate::grade::grade_submission(&set(), &table.to_string()).unwrap();
        report.verdict(id).unwrap().as_str()
    }

    #[test]
    fn ids_are_unique_lowercase_and_every_question_has_an_explanation() {
        let qs = questions();
        let mut seen = std::collections::BTreeSet::new();
        for q in &qs {
            assert!(seen.insert(q.id), "duplicate id {}", q.id);
            assert!(q
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        }
        for n in 1..=19 {
            let id = format!("q{n}");
            let q = qs
                .iter()
                .find(|q| q.id == id)
                .unwrap_or_else(|| panic!("no {id}"));
            assert_eq!((q.expected)().unwrap(), Expected::FreeText);
        }
        assert_eq!(set().id, "ddpm-math");
    }

    #[test]
    fn every_expectation_computes_and_links_resolve() {
        let md = read("answers/ddpm-math.md");
        for q in questions() {
            (q.expected)().unwrap_or_else(|e| panic!("{}: {e}", q.id));
            let anchor = q
                .link
                .strip_prefix("answers/ddpm-math.md#")
                .expect("link into ddpm-math.md");
            assert!(
                md.contains(&format!("<a id=\"{anchor}\"></a>")),
                "{}: no anchor {anchor}",
                q.id
            );
        }
    }

    #[test]
    fn numeric_expectations_match_hand_values() {
        // values worked by hand in theory::ddpm's tests and in answers/ddpm-math.md
        let hand: &[(&str, f64)] = &[
            ("q3a", 0.219_218_6),
            ("q3b", 0.01005),
            ("q3c", 150.0),
            ("q4a", 75.5),
            ("q4b", 1.0),
            ("q5a", 1.0),
            ("q5b", 2.5075),
            ("q5c", 0.528_041),
            ("q5d", 0.280_768),
            ("q6a", 0.509_603),
            ("q6b", 0.999_299_5),
            ("q7b", 1.010_152_5),
            ("q9a", 149.0 / 150.0),
            ("q12b", std::f64::consts::SQRT_2),
            ("q13b", 1.732_012),
            // sqrt(T (T + 1) / 12) / 25, the n - 1 form of the same spread
            ("q13b", (150.0f64 * 151.0 / 12.0).sqrt() / 25.0),
            ("q13c", 149.0),
            ("q14c", 32_768.0),
            ("q16b", 0.01),
            ("q16c", 0.0),
            ("q18a", 0.999_95),
            ("q18b", 179_712.0),
        ];
        let qs = questions();
        for (id, want) in hand {
            let q = qs.iter().find(|q| q.id == *id).unwrap();
            let values: Vec<f64> = match (q.expected)().unwrap() {
                Expected::Number { value, .. } => vec![value],
                Expected::AnyOf(options) => options
                    .iter()
                    .map(|(_, e)| match e {
                        Expected::Number { value, .. } => *value,
                        other => panic!("{id}: {other:?}"),
                    })
                    .collect(),
                other => panic!("{id}: {other:?}"),
            };
            assert!(
                values
                    .iter()
                    .any(|value| (value - want).abs() <= 1e-6 * want.abs().max(1.0)),
                "{id}: {values:?} vs {want}"
            );
        }
    }

    #[test]
    fn readme_documents_every_id_with_a_correct_example() {
        let readme = read("answers/README.md");
        for q in questions() {
            let row = readme
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", q.id)))
                .unwrap_or_else(|| panic!("{} is not documented", q.id));
            let example = row
                .rsplit('`')
                .nth(1)
                .unwrap_or_else(|| panic!("{}: no example", q.id));
            let expected = (q.expected)().unwrap();
            if expected == Expected::FreeText {
                continue;
            }
            let table: toml::Table = toml::from_str(example).unwrap();
            assert_eq!(verdict(q.id, table.get(q.id)), "correct", "{}", q.id);
        }
    }

    #[test]
    fn examples_get_their_verdicts() {
        let qs = questions();
        let parse = |rel: &str| -> toml::Table { toml::from_str(&read(rel)).unwrap() };
        let correct = parse("answers/examples/ddpm-math-correct.toml");
        for q in &qs {
            let v = verdict(q.id, correct.get(q.id));
            let want = if (q.expected)().unwrap() == Expected::FreeText {
                "manual"
            } else {
                "correct"
            };
            assert_eq!(v, want, "correct example, {}", q.id);
        }
        for key in correct.keys() {
            assert!(
                qs.iter().any(|q| q.id == key),
                "unknown id {key} in the correct example"
            );
        }
        let mistakes = parse("answers/examples/ddpm-math-mistakes.toml");
        let expected = parse("answers/examples/ddpm-math-mistakes.expected.toml");
        let mut got = BTreeMap::new();
        for q in &qs {
            got.insert(q.id, verdict(q.id, mistakes.get(q.id)));
        }
        for (id, want) in &expected {
            let g = got
                .get(id.as_str())
                .unwrap_or_else(|| panic!("unknown id {id} in expected"));
            assert_eq!(Some(*g), want.as_str(), "mistakes example, {id}");
        }
        assert_eq!(
            expected.len(),
            qs.len(),
            "the expected verdicts cover every id"
        );
        for v in ["correct", "incorrect", "missing", "unparseable", "manual"] {
            assert!(
                got.values().any(|g| *g == v),
                "no {v} verdict among the mistakes"
            );
        }
    }
}
