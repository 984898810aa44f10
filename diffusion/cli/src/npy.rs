//! Writing NumPy `.npy` files (format version 1.0, little-endian float32, C order), so samples
//! open with `numpy.load`.

use std::path::Path;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};

/// The bytes of a `.npy` file holding `x` as float32.
pub fn to_npy_bytes(x: &Tensor) -> Result<Vec<u8>> {
    let data: Vec<f32> = x
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let shape = x
        .dims()
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let shape = if x.rank() == 1 {
        format!("{shape},")
    } else {
        shape
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    // magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * data.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}

/// Writes `x` to `path` as a float32 `.npy` (through a temporary file and a rename).
pub fn save_npy(x: &Tensor, path: &Path) -> Result<()> {
    diffusion::files::write_atomic(path, &to_npy_bytes(x)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_aligned_and_describes_the_array() {
        let x = Tensor::new(&[[1f32, -2.0, 0.5]], &Device::Cpu).unwrap();
        let b = to_npy_bytes(&x).unwrap();
        assert_eq!(&b[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hlen]).unwrap();
        assert!(header.contains("'shape': (1, 3)"), "{header}");
        assert!(header.ends_with('\n'));
        let body = &b[10 + hlen..];
        assert_eq!(body.len(), 12);
        assert_eq!(f32::from_le_bytes(body[4..8].try_into().unwrap()), -2.0);
    }
}
