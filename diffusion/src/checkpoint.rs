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

use crate::unet::is_trainable;
use crate::UNet;

/// A fresh, randomly initialised U-Net and the `VarMap` holding its tensors.
pub fn new_unet(device: &Device) -> Result<(UNet, VarMap)> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let unet = UNet::new(vb)?;
    Ok((unet, varmap))
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
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    candle_core::safetensors::save(tensors, &tmp)
        .with_context(|| format!("cannot write the checkpoint {}", tmp.display()))?;
    // safetensors writes through a private (0600) temporary file: make it readable like any
    // other output, for the notebook server or a colleague
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .with_context(|| format!("cannot set the permissions of {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "cannot move the checkpoint into place at {}",
            path.display()
        )
    })?;
    Ok(())
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
            "{} does not match the course's U-Net ({} problem(s)): {}",
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

/// A U-Net with the weights of the checkpoint at `path`.
pub fn load_unet(path: &Path, device: &Device) -> Result<(UNet, VarMap)> {
    let (unet, varmap) = new_unet(device)?;
    load(&varmap, path)?;
    Ok((unet, varmap))
}
