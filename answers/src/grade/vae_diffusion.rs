//! Set `vae-diffusion`: VAE questions Q1-Q5 and diffusion questions Q11-Q12
//! (`answers/vae-diffusion.md`).

use super::question::{choice, free, Expected, Question, QuestionSet};
use crate::theory::gaussian;

/// The set.
pub fn set() -> QuestionSet {
    QuestionSet {
        id: "vae-diffusion",
        title: "VAEs (Q1-Q5) and diffusion models as hierarchical VAEs (Q11-Q12)",
        questions,
    }
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "q1",
            prompt: "how to sample an image from the VAE (ancestral sampling)",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q1",
        },
        Question {
            id: "q2",
            prompt:
                "why Monte Carlo with prior samples is inefficient, and how it scales with dim z",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q2",
        },
        Question {
            id: "q3a",
            prompt: "can KL(p || q) be negative? (yes/no)",
            expected: || Ok(choice(&["no", "never", "false"])),
            hint: "Jensen's inequality (Gibbs' inequality) gives KL >= 0",
            link: "answers/vae-diffusion.md#q3",
        },
        Question {
            id: "q3b",
            prompt: "when is KL(p || q) exactly zero? (e.g. \"p=q\")",
            expected: || {
                Ok(choice(&[
                    "p=q",
                    "q=p",
                    "p=q a.e.",
                    "p=q almost everywhere",
                    "when p=q",
                    "p equals q",
                    "p and q are equal",
                ]))
            },
            hint: "only when the two distributions coincide (almost everywhere), not merely when \
                   they are close",
            link: "answers/vae-diffusion.md#q3",
        },
        Question {
            id: "q3c",
            prompt: "KL(p || q) is infinite when (a) p has mass where q = 0, or (b) q has mass \
                     where p = 0? (a/b)",
            expected: || Ok(choice(&["a", "(a)"])),
            hint: "the integrand p log(p/q) blows up where p > 0 and q = 0; where p = 0 it is 0",
            link: "answers/vae-diffusion.md#q3",
        },
        Question {
            id: "q3d",
            prompt: "KL(N(1, 0.01) || N(0, 0.01)) (variances 0.01: two narrow spikes)",
            expected: || {
                Ok(Expected::Number {
                    value: gaussian::kl_normal(1.0, 0.01, 0.0, 0.01)?,
                    abs_tol: 0.0,
                    rel_tol: 1e-3,
                })
            },
            hint: "with equal variances v, KL = (mu1 - mu2)^2 / (2 v)",
            link: "answers/vae-diffusion.md#q3",
        },
        Question {
            id: "q3e",
            prompt:
                "can the KL between two Gaussians with positive variances be infinite? (yes/no)",
            expected: || Ok(choice(&["no", "never", "false"])),
            hint: "both densities are positive everywhere, and the closed form is finite",
            link: "answers/vae-diffusion.md#q3",
        },
        Question {
            id: "q4",
            prompt: "rewrite log p(x_n) as the ELBO plus a KL divergence",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q4",
        },
        Question {
            id: "q5",
            prompt: "what can happen when the ELBO is pushed up",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q5",
        },
        Question {
            id: "q11",
            prompt: "the ELBO of a Markovian hierarchical VAE",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q11",
        },
        Question {
            id: "q12",
            prompt: "a diffusion model as a hierarchical VAE: its architecture",
            expected: free,
            hint: "",
            link: "answers/vae-diffusion.md#q12",
        },
    ]
}
