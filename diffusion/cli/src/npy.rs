//! NumPy `.npy` files: written as format version 1.0, little-endian float32, C order, so samples
//! open with `numpy.load`; read back from any format version, float32 or float64 (made float32),
//! C order, so that `numpy.save(path, x.astype("float32"))` gives a file `diffusion score` reads.

use std::path::Path;

use anyhow::{bail, Context, Result};
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

/// The value of `key` in a `.npy` header such as `{'descr': '<f4', 'fortran_order': False,
/// 'shape': (2, 3), }`: the text after `'key':` up to the next top-level comma.
fn header_value<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let pattern = format!("'{key}':");
    let start = header
        .find(&pattern)
        .with_context(|| format!("the .npy header has no '{key}' entry: {header}"))?
        + pattern.len();
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')').map(|i| i + 1)
    } else {
        rest.find([',', '}'])
    }
    .with_context(|| format!("the .npy header's '{key}' entry is not closed: {header}"))?;
    Ok(rest[..end].trim())
}

/// The array held by the bytes of a `.npy` file, as an f32 tensor of its shape.
pub fn from_npy_bytes(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("not a NumPy .npy file (it does not start with \\x93NUMPY)");
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => bail!("unknown .npy format version {v}: versions 1 to 3 are read"),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        bail!(
            "the .npy file is truncated: its header says {header_len} bytes, the file is shorter"
        );
    }
    let header = std::str::from_utf8(&bytes[header_start..data_start])
        .context("the .npy header is not text")?;
    let descr = header_value(header, "descr")?.trim_matches(['\'', '"']);
    if header_value(header, "fortran_order")? != "False" {
        bail!(
            "the array is stored in Fortran order: save it in C order \
             (`numpy.save(path, numpy.ascontiguousarray(x))`)"
        );
    }
    let shape_text = header_value(header, "shape")?;
    let shape = shape_text
        .trim_matches(['(', ')'])
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .with_context(|| format!("the .npy shape {shape_text} is not a list of sizes"))?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .with_context(|| format!("the .npy shape {shape_text} is too large"))?;
    let data = &bytes[data_start..];
    let width = match descr {
        "<f4" => 4,
        "<f8" => 8,
        other => bail!(
            "the array's dtype is {other:?}: float32 ('<f4') or float64 ('<f8') is read; \
             convert with `x.astype(\"float32\")`"
        ),
    };
    if Some(data.len()) != count.checked_mul(width) {
        bail!(
            "the .npy file holds {} bytes of data, but shape {shape:?} of {descr} needs {}: \
             the file is truncated or damaged",
            data.len(),
            count.saturating_mul(width)
        );
    }
    let values: Vec<f32> = if width == 4 {
        data.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    } else {
        data.chunks_exact(8)
            .map(|b| {
                let mut le = [0u8; 8];
                le.copy_from_slice(b);
                f64::from_le_bytes(le) as f32
            })
            .collect()
    };
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Reads the `.npy` file at `path` (see [`from_npy_bytes`]).
pub fn load_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "cannot read {}: give a .npy file of samples, such as the samples.npy `diffusion sample` writes",
            path.display()
        )
    })?;
    from_npy_bytes(&bytes).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_file_reads_back() {
        let x = Tensor::new(
            &[[[1f32, -2.0], [0.5, 3.25]], [[0.0, 7.0], [-1.0, 1e-3]]],
            &Device::Cpu,
        )
        .unwrap();
        let back = from_npy_bytes(&to_npy_bytes(&x).unwrap()).unwrap();
        assert_eq!(back.dims(), &[2, 2, 2]);
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let v = Tensor::new(&[4f32, 5.0, 6.0], &Device::Cpu).unwrap();
        assert_eq!(
            from_npy_bytes(&to_npy_bytes(&v).unwrap()).unwrap().dims(),
            &[3]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        save_npy(&x, &path).unwrap();
        assert_eq!(load_npy(&path).unwrap().dims(), &[2, 2, 2]);
    }

    /// A float64 file (format 1.0, a header without padding), then damaged or unsupported ones.
    #[test]
    fn float64_and_bad_files() {
        let header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }\n";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for v in [1.5f64, -0.25] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(
            from_npy_bytes(&b).unwrap().to_vec1::<f32>().unwrap(),
            [1.5, -0.25]
        );

        let e = format!("{:#}", from_npy_bytes(&b[..b.len() - 3]).unwrap_err());
        assert!(e.contains("truncated"), "{e}");
        let e = format!("{:#}", from_npy_bytes(b"PK\x03\x04 not numpy").unwrap_err());
        assert!(e.contains("not a NumPy"), "{e}");
        let mut i4 = b.clone();
        let at = i4.windows(3).position(|w| w == b"<f8").unwrap();
        i4[at..at + 3].copy_from_slice(b"<i8");
        let e = format!("{:#}", from_npy_bytes(&i4).unwrap_err());
        assert!(e.contains("float32") && e.contains("<i8"), "{e}");
        let mut fortran = b.clone();
        let at = fortran.windows(5).position(|w| w == b"False").unwrap();
        fortran[at..at + 5].copy_from_slice(b"True ");
        let e = format!("{:#}", from_npy_bytes(&fortran).unwrap_err());
        assert!(e.contains("Fortran"), "{e}");
        let e = format!(
            "{:#}",
            load_npy(Path::new("/nonexistent/s.npy")).unwrap_err()
        );
        assert!(e.contains("samples.npy"), "{e}");
    }

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
