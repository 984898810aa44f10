//! Where tensors live: CUDA when the crate is built with the `cuda` feature and a GPU is present,
//! the CPU otherwise.

use candle_core::Device;

/// The device to compute on: the first CUDA GPU when the `cuda` feature is enabled and one is
/// available, otherwise the CPU.
///
/// ```
/// let dev = diffusion::device().unwrap();
/// println!("training on {dev:?}");
/// ```
pub fn device() -> anyhow::Result<Device> {
    Ok(Device::cuda_if_available(0)?)
}

/// A short human name for a device ("cpu", "cuda:0").
pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        Device::Cuda(_) => "cuda:0".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}
