//! Set `assignment4`: sinusoidal embedding, U-Net shapes and loss, autograd (`answers/assignment4.md`).

use super::question::{any_of, choice, free, Expected, Question, QuestionSet};
use crate::theory::{embedding, energy, shapes};

/// The set.
pub fn set() -> QuestionSet {
    QuestionSet {
        id: "assignment4",
        title: "Assignment 4: diffusion building blocks and autograd",
        questions,
    }
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "q1",
            prompt: "the i-th entry of the sinusoidal timestep embedding (formula)",
            expected: free,
            hint: "",
            link: "answers/assignment4.md#q1",
        },
        Question {
            id: "q2",
            prompt:
                "embedding of t = 1, d = 8, max period 10000, sin/cos interleaved (8 numbers): \
                     the formula of q1 as written (exponent i/d) or with pairs sharing 2k/d",
            expected: || {
                let vector = |convention| -> anyhow::Result<Expected> {
                    Ok(Expected::Vector {
                        values: embedding::embed(1.0, 8, 10000.0, convention)?,
                        abs_tol: 1e-4,
                        rel_tol: 0.0,
                    })
                };
                Ok(any_of(vec![
                    (
                        "as written: exponent i/d",
                        vector(embedding::Convention::PerEntry)?,
                    ),
                    (
                        "pairs sharing 10000^(-2k/d), as in transformers",
                        vector(embedding::Convention::Interleaved)?,
                    ),
                ]))
            },
            hint: "as written, entry i uses 10000^(i/8) = 10^(i/2): [sin 1, cos 10^-0.5, sin 0.1, \
                   cos 10^-1.5, ...]; with shared pairs [sin 1, cos 1, sin 0.1, cos 0.1, ...]",
            link: "answers/assignment4.md#q2",
        },
        Question {
            id: "q3",
            prompt: "how the timestep embedding relates to transformer positional encodings",
            expected: free,
            hint: "",
            link: "answers/assignment4.md#q3",
        },
        Question {
            id: "q4",
            prompt:
                "bottleneck size after three stride-2 downsamplings of 64x64, as [height, width]",
            expected: || {
                let sides = shapes::stride2_chain(64, 3)?;
                let side = *sides.last().unwrap_or(&0) as f64;
                Ok(Expected::Vector {
                    values: vec![side, side],
                    abs_tol: 0.0,
                    rel_tol: 0.0,
                })
            },
            hint: "each stride-2 block halves the side: 64 -> 32 -> 16 -> 8",
            link: "answers/assignment4.md#q4",
        },
        Question {
            id: "q5",
            prompt: "what the U-Net outputs and the loss it is trained with",
            expected: free,
            hint: "",
            link: "answers/assignment4.md#q5",
        },
        Question {
            id: "q6a",
            prompt: "dy/dx of y = x^2 + 3x at x = 2",
            expected: || {
                Ok(Expected::Number {
                    value: energy::quadratic_grad(2.0),
                    abs_tol: 1e-6,
                    rel_tol: 0.0,
                })
            },
            hint: "dy/dx = 2x + 3",
            link: "answers/assignment4.md#q6a",
        },
        Question {
            id: "q6b",
            prompt:
                "with requires_grad=False on x, what does y.backward() do: \"error\" or \"none\" \
                     (runs and leaves x.grad = None)?",
            expected: || {
                Ok(choice(&[
                    "error",
                    "runtimeerror",
                    "runtime error",
                    "raises an error",
                    "raises runtimeerror",
                ]))
            },
            hint: "y then has no grad_fn, so backward() raises a RuntimeError; x.grad stays None \
                   only because no backward pass ever ran",
            link: "answers/assignment4.md#q6b",
        },
        Question {
            id: "q6c",
            prompt:
                "default value of requires_grad for a tensor made with torch.tensor (true/false)",
            expected: || Ok(choice(&["false", "requires_grad=false", "no"])),
            hint: "tensors are constants unless asked otherwise; nn.Parameter is the exception",
            link: "answers/assignment4.md#q6c",
        },
        Question {
            id: "q7a",
            prompt: "w.grad after y.backward() when w does not require grad (a value or \"none\")",
            expected: || Ok(choice(&["none", "w.grad=none", "w.gradisnone", "null"])),
            hint: "only leaves with requires_grad=True receive a .grad",
            link: "answers/assignment4.md#q7a",
        },
        Question {
            id: "q7b_x",
            prompt: "x.grad for y = w0 x^2 + w1 x at x = 2, w = [1, 3]",
            expected: || {
                Ok(Expected::Number {
                    value: energy::weighted_grads(2.0, [1.0, 3.0]).0,
                    abs_tol: 1e-6,
                    rel_tol: 0.0,
                })
            },
            hint: "dy/dx = 2 w0 x + w1",
            link: "answers/assignment4.md#q7b",
        },
        Question {
            id: "q7b_w",
            prompt: "w.grad for y = w0 x^2 + w1 x at x = 2, w = [1, 3] (2 numbers)",
            expected: || {
                Ok(Expected::Vector {
                    values: energy::weighted_grads(2.0, [1.0, 3.0]).1.to_vec(),
                    abs_tol: 1e-6,
                    rel_tol: 0.0,
                })
            },
            hint: "dy/dw0 = x^2 and dy/dw1 = x",
            link: "answers/assignment4.md#q7b",
        },
    ]
}
