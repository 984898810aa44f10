//! Checkpoints: the network's `state_dict` in a safetensors file.
//!
//! Names, shapes and dtypes are exactly PyTorch's (BatchNorm running statistics included, and
//! `num_batches_tracked` as an int64 scalar), so
//! `model.load_state_dict(safetensors.torch.load_file(path))` accepts a file written here, and a
//! file written by PyTorch loads into [`UNet`]. Files are written to a temporary file beside the
//! target and renamed, so an interrupted save never leaves a half-written checkpoint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use crate::network::Network;
use crate::UNet;

/// Is `name` the bias of a convolution followed by a BatchNorm (`X.i.bias` with a
/// `X.(i+1).running_mean`)?
pub fn feeds_batch_norm(name: &str, names: &[&str]) -> bool {
    let Some(layer) = name.strip_suffix(".bias") else {
        return false;
    };
    let Some((prefix, index)) = layer.rsplit_once('.') else {
        return false;
    };
    let Ok(i) = index.parse::<usize>() else {
        return false;
    };
    let stat = format!("{prefix}.{}.running_mean", i + 1);
    names.contains(&stat.as_str())
}

/// Is this `state_dict` entry a trainable parameter (not a BatchNorm statistic)?
pub fn is_trainable(name: &str) -> bool {
    !(name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked"))
}

/// Draws every trainable tensor of `varmap` afresh from `rng` as PyTorch initialises
/// convolutions and linear layers, so that a seed fixes the starting weights:
///
/// ```text
/// W, b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)),   fan_in = W.size(1) * kernel height * kernel width
/// ```
///
/// (for `Linear`, `Conv2d` and `ConvTranspose2d` alike, as `torch.nn.init` computes it). A bias
/// takes its weight's bound. Normalisation layers (a weight of rank 1) keep weight 1 and bias 0,
/// and BatchNorm's running statistics are not touched. Tensors are visited in name order.
pub fn init_weights(varmap: &VarMap, rng: &mut crate::Rng) -> Result<()> {
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    let mut names: Vec<&String> = data.keys().filter(|n| is_trainable(n)).collect();
    names.sort();
    for name in names {
        let Some(layer) = name.strip_suffix(".weight").or(name.strip_suffix(".bias")) else {
            continue;
        };
        let Some(weight) = data.get(&format!("{layer}.weight")) else {
            continue;
        };
        let dims = weight.dims();
        if dims.len() < 2 {
            continue; // a normalisation layer: weight 1, bias 0
        }
        let fan_in: usize = dims[1..].iter().product();
        let var = &data[name];
        let bound = 1.0 / (fan_in as f64).sqrt();
        var.set(&rng.uniform(var.shape().clone(), bound, var.device())?)?;
    }
    Ok(())
}

/// A fresh, randomly initialised network and the `VarMap` holding its tensors.
pub fn new_network<M: Network>(config: M::Config, device: &Device) -> Result<(M, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = M::build(config, vb)?;
    Ok((model, varmap))
}

/// A fresh, randomly initialised notebook-02 U-Net and the `VarMap` holding its tensors.
pub fn new_unet(device: &Device) -> Result<(UNet, VarMap)> {
    new_network(Default::default(), device)
}

/// Number of trainable parameters (BatchNorm statistics excluded): 240,385 for the course's net.
pub fn count_parameters(varmap: &VarMap) -> usize {
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    data.iter()
        .filter(|(name, _)| is_trainable(name))
        .map(|(_, v)| v.elem_count())
        .sum()
}

/// The tensors of `varmap` by name, copied to the CPU.
pub fn state_dict(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    data.iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.as_tensor().to_device(&Device::Cpu)?.contiguous()?,
            ))
        })
        .collect()
}

/// Writes `tensors` to `path` as safetensors, through a temporary file and a rename.
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    crate::files::write_atomic_with(path, |tmp| {
        candle_core::safetensors::save(tensors, tmp)
            .with_context(|| format!("cannot write the checkpoint {}", path.display()))
    })
}

/// Saves every tensor of `varmap` (parameters and BatchNorm statistics) to `path`.
pub fn save(varmap: &VarMap, path: &Path) -> Result<()> {
    save_tensors(&state_dict(varmap)?, path)
}

/// Reads a safetensors file, with an error that names the file and the fix.
pub fn read_tensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        bail!(
            "checkpoint {} does not exist: train one with `diffusion train --out DIR`, or give the path of a .safetensors file",
            path.display()
        );
    }
    candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
        format!(
            "{} is not a readable safetensors checkpoint (truncated or corrupt?): save it again",
            path.display()
        )
    })
}

/// Loads a checkpoint into `varmap`, strictly: every tensor the network has must be in the file
/// with the same shape and dtype, and the file must hold nothing else. On any mismatch nothing
/// is changed and the error lists what differs.
pub fn load(varmap: &VarMap, path: &Path) -> Result<()> {
    let tensors = read_tensors(path)?;
    let data = varmap
        .data()
        .lock()
        .expect("the VarMap lock is never poisoned");
    let mut problems = vec![];
    for (name, var) in data.iter() {
        match tensors.get(name) {
            None => problems.push(format!("missing `{name}`")),
            Some(t) if t.dims() != var.dims() || t.dtype() != var.dtype() => {
                problems.push(format!(
                    "`{name}` is {:?} {:?} in the file, the network needs {:?} {:?}",
                    t.dtype(),
                    t.dims(),
                    var.dtype(),
                    var.dims()
                ))
            }
            Some(_) => {}
        }
    }
    let mut unexpected: Vec<_> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
    unexpected.sort();
    problems.extend(unexpected.iter().map(|k| format!("unexpected `{k}`")));
    if !problems.is_empty() {
        problems.sort();
        bail!(
            "{} does not match the network ({} problem(s)): {}",
            path.display(),
            problems.len(),
            problems.join("; ")
        );
    }
    for (name, var) in data.iter() {
        var.set(&tensors[name].to_device(var.device())?)?;
    }
    Ok(())
}

/// A network with the weights of the checkpoint at `path`, and the `VarMap` holding them.
pub fn load_network<M: Network>(
    path: &Path,
    config: M::Config,
    device: &Device,
) -> Result<(M, VarMap)> {
    let (model, varmap) = new_network(config, device)?;
    load(&varmap, path)?;
    Ok((model, varmap))
}

/// A notebook-02 U-Net with the weights of the checkpoint at `path` (see also [`UNet::load`]).
pub fn load_unet(path: &Path, device: &Device) -> Result<(UNet, VarMap)> {
    load_network(path, Default::default(), device)
}
