//! Set `generative-models`: model families, the two-image ELBO exercise, theory questions and the
//! DDPM numericals (`answers/generative-models.md`).

use super::question::{choice, free, Expected, Question, QuestionSet};
use crate::theory::{latent_toy, toy_chain::ToyChain};
use anyhow::Result;

/// The set.
pub fn set() -> QuestionSet {
    QuestionSet {
        id: "generative-models",
        title: "Generative models: families, ELBO, theory and DDPM numericals",
        questions,
    }
}

fn number(value: f64, abs_tol: f64) -> Expected {
    Expected::Number {
        value,
        abs_tol,
        rel_tol: 0.0,
    }
}

fn toy() -> Result<ToyChain> {
    ToyChain::new(&[0.1, 0.2])
}

/// Free-text theory questions 3(a) .. 3(r): (id, prompt).
const THEORY: [(&str, &str); 18] = [
    (
        "3a",
        "goal of generative AI; difference from discriminative modelling",
    ),
    ("3b", "two milestones of modern generative AI"),
    (
        "3c",
        "why latent variable models suit high-dimensional data",
    ),
    (
        "3d",
        "latent variable vs autoregressive models for interpretable medical imaging",
    ),
    (
        "3e",
        "why variational inference rather than exact Bayesian inference",
    ),
    (
        "3f",
        "limitations of variational inference; the variational gap",
    ),
    ("3g", "standard autoencoder vs VAE"),
    (
        "3h",
        "model choice for anomaly detection in industrial equipment",
    ),
    ("3i", "two advantages and two disadvantages of GANs"),
    ("3j", "GAN, VAE or diffusion for game avatars"),
    ("3k", "advantages of normalizing flows over VAEs"),
    ("3l", "why flows are hard to scale to high resolution"),
    ("3m", "main idea of diffusion models"),
    ("3n", "why diffusion samples often beat GAN samples"),
    ("3o", "main computational disadvantage of diffusion models"),
    ("3p", "forward and reverse processes of DDPM"),
    ("3q", "challenges of real-time DDPM deployment"),
    (
        "3r",
        "model choice for likelihood-scored MRI and for marketing artwork",
    ),
];

const THEORY_LINKS: [&str; 18] = [
    "answers/generative-models.md#3a",
    "answers/generative-models.md#3b",
    "answers/generative-models.md#3c",
    "answers/generative-models.md#3d",
    "answers/generative-models.md#3e",
    "answers/generative-models.md#3f",
    "answers/generative-models.md#3g",
    "answers/generative-models.md#3h",
    "answers/generative-models.md#3i",
    "answers/generative-models.md#3j",
    "answers/generative-models.md#3k",
    "answers/generative-models.md#3l",
    "answers/generative-models.md#3m",
    "answers/generative-models.md#3n",
    "answers/generative-models.md#3o",
    "answers/generative-models.md#3p",
    "answers/generative-models.md#3q",
    "answers/generative-models.md#3r",
];

fn questions() -> Vec<Question> {
    let mut qs = vec![
        Question {
            id: "1a",
            prompt: "which models have a tractable data-to-latent inverse by design",
            expected: || {
                Ok(choice(&[
                    "normalizing flows",
                    "normalizing flow",
                    "normalising flows",
                    "normalising flow",
                    "flows",
                    "flow",
                    "flow-based",
                    "flow-based models",
                    "flow-based model",
                    "flow models",
                ]))
            },
            hint: "only a bijective generator gives z = f^-1(x) exactly",
            link: "answers/generative-models.md#1a",
        },
        Question {
            id: "1b",
            prompt: "which model class minimises a divergence by telling real from fake samples",
            expected: || {
                Ok(choice(&[
                    "gans",
                    "gan",
                    "generative adversarial networks",
                    "generative adversarial network",
                ]))
            },
            hint: "a discriminator that separates real from generated samples is the GAN's",
            link: "answers/generative-models.md#1b",
        },
        Question {
            id: "1c",
            prompt: "which of (a) autoregressive (b) latent variable (c) flows (d) all give the \
                     exact log-likelihood gradient (e.g. \"a,c\")",
            expected: || {
                Ok(choice(&[
                    "a,c",
                    "c,a",
                    "a and c",
                    "(a) and (c)",
                    "(a),(c)",
                    "a+c",
                    "ac",
                ]))
            },
            hint: "a latent variable model's marginal likelihood is an intractable integral",
            link: "answers/generative-models.md#1c",
        },
        Question {
            id: "1d",
            prompt: "effect of an encoder with too little capacity on a VAE",
            expected: free,
            hint: "",
            link: "answers/generative-models.md#1d",
        },
        Question {
            id: "2a",
            prompt: "log p(x1) in the two-image model (natural log)",
            expected: || Ok(number(latent_toy::log_p_x1(), 1e-3)),
            hint: "p(x1) = P(z >= 0) = 1/2 under N(0, 1); take the natural log",
            link: "answers/generative-models.md#2a",
        },
        Question {
            id: "2b",
            prompt: "the posterior p(z | x1)",
            expected: free,
            hint: "",
            link: "answers/generative-models.md#2b",
        },
        Question {
            id: "2c",
            prompt: "KL(N(0,1) || p(z | x1)) (a number; inf allowed)",
            expected: || {
                Ok(number(
                    latent_toy::kl_gaussian_to_posterior(0.0, 1.0)?,
                    1e-3,
                ))
            },
            hint: "q has mass on z < 0 where the posterior is zero: the integrand is +inf there",
            link: "answers/generative-models.md#2c",
        },
        Question {
            id: "2d",
            prompt: "P_q(z >= 0) for q = N(1, 1)",
            expected: || Ok(number(latent_toy::q_mass_nonnegative(1.0, 1.0)?, 1e-4)),
            hint: "standardise: P(Z >= -1) = Phi(1)",
            link: "answers/generative-models.md#2d",
        },
        Question {
            id: "2e",
            prompt: "ELBO(x1; N(1, 1)) (a number; -inf allowed)",
            expected: || Ok(number(latent_toy::elbo_gaussian(1.0, 1.0)?.elbo, 1e-3)),
            hint: "E_q[log p(x1|z)] contains log 0 = -inf on the 15.9% of q's mass below zero",
            link: "answers/generative-models.md#2e",
        },
    ];
    for ((id, prompt), link) in THEORY.iter().zip(THEORY_LINKS) {
        qs.push(Question {
            id,
            prompt,
            expected: free,
            hint: "",
            link,
        });
    }
    qs.extend([
        Question {
            id: "4a",
            prompt: "derive q(x_t | x_0) in closed form",
            expected: free,
            hint: "",
            link: "answers/generative-models.md#4a",
        },
        Question {
            id: "4b",
            prompt: "the DDPM training objective with noise prediction",
            expected: free,
            hint: "",
            link: "answers/generative-models.md#4b",
        },
        Question {
            id: "num_a",
            prompt: "[alpha_1, alpha_2, alpha_bar_2] for beta_1 = 0.1, beta_2 = 0.2",
            expected: || {
                let c = toy()?;
                Ok(Expected::Vector {
                    values: vec![c.alpha(1)?, c.alpha(2)?, c.alpha_bar(2)?],
                    abs_tol: 1e-4,
                    rel_tol: 0.0,
                })
            },
            hint: "alpha_t = 1 - beta_t and alpha_bar_2 = alpha_1 alpha_2",
            link: "answers/generative-models.md#num-a",
        },
        Question {
            id: "num_b",
            prompt: "[mean, variance] of q(x_2 | x_0 = 2)",
            expected: || {
                let (m, v) = toy()?.q_mean_var(2.0, 2)?;
                Ok(Expected::Vector {
                    values: vec![m, v],
                    abs_tol: 1e-3,
                    rel_tol: 0.0,
                })
            },
            hint: "mean sqrt(alpha_bar_2) x_0 (note the square root), variance 1 - alpha_bar_2",
            link: "answers/generative-models.md#num-b",
        },
        Question {
            id: "num_c",
            prompt: "why q(x_{t-1} | x_t) is (approximately) Gaussian",
            expected: free,
            hint: "",
            link: "answers/generative-models.md#num-c",
        },
        Question {
            id: "num_d",
            prompt: "limit of the generated distribution as T -> infinity with a perfect noise \
                     predictor (e.g. \"p_data\")",
            expected: || {
                Ok(choice(&[
                    "p_data",
                    "pdata",
                    "p_data(x)",
                    "p_data(x_0)",
                    "q(x_0)",
                    "q(x0)",
                    "data distribution",
                    "the data distribution",
                    "true data distribution",
                    "the true data distribution",
                ]))
            },
            hint: "the reverse chain undoes the noising, so it ends at the data, not at N(0, I)",
            link: "answers/generative-models.md#num-d",
        },
    ]);
    qs
}
