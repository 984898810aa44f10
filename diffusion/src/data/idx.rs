//! The IDX file format of (Fashion)MNIST, read and written, raw or gzipped.
//!
//! An IDX file is a big-endian header followed by the values, row-major:
//!
//! | file | magic | dimensions (u32 each) | payload |
//! | --- | --- | --- | --- |
//! | images | `0x00000803` (u8 values, 3 dims) | count, rows, cols | `count * rows * cols` bytes |
//! | labels | `0x00000801` (u8 values, 1 dim) | count | `count` bytes |
//!
//! A path ending in `.gz` is gzip-compressed; any other path is read and written raw.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Magic number of an IDX file of u8 values with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of u8 values with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Grey images stored as in an IDX file: `pixels[(i * rows + y) * cols + x]`, one byte each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Height of every image.
    pub rows: usize,
    /// Width of every image.
    pub cols: usize,
    /// `count * rows * cols` bytes, image after image, row after row.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Checks that `pixels` holds exactly `count * rows * cols` bytes.
    pub fn new(count: usize, rows: usize, cols: usize, pixels: Vec<u8>) -> Result<Self> {
        let want = count
            .checked_mul(rows)
            .and_then(|n| n.checked_mul(cols))
            .context("image count times image size overflows")?;
        if pixels.len() != want {
            bail!(
                "{count} images of {rows}x{cols} need {want} bytes, got {}",
                pixels.len()
            );
        }
        Ok(Self {
            count,
            rows,
            cols,
            pixels,
        })
    }

    /// The bytes of image `i` (`rows * cols` of them), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let size = self.rows * self.cols;
        self.pixels.get(i * size..(i + 1) * size)
    }
}

fn is_gz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "gz")
}

/// Reads a file whole, un-gzipping it when its name ends in `.gz`.
fn read_bytes(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !is_gz(path) {
        return Ok(file);
    }
    let mut out = Vec::with_capacity(file.len() * 4);
    flate2::read::GzDecoder::new(file.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| {
            anyhow::anyhow!(
                "{} is not a valid gzip file ({e}): delete it and fetch it again \
                 (`diffusion data`), or replace it with an uncompressed copy without `.gz`",
                path.display()
            )
        })?;
    Ok(out)
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Checks the magic number and reads `ndims` dimensions, returning them and the payload.
fn parse_header<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    what: &str,
) -> Result<(Vec<usize>, &'a [u8])> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        bail!(
            "{} is truncated: {} bytes, too short for an IDX header; fetch it again",
            path.display(),
            bytes.len()
        );
    }
    let found = be_u32(bytes, 0);
    if found != magic {
        let hint = if found >> 16 == 0x1f8b {
            " (it looks gzipped: give it a `.gz` name)"
        } else {
            ""
        };
        bail!(
            "{} has magic number {found:#010x}, expected {magic:#010x} for an IDX {what} file{hint}; \
             check that the file is the right one and not damaged",
            path.display()
        );
    }
    if bytes.len() < header {
        bail!(
            "{} is truncated: {} bytes, the IDX {what} header needs {header}; fetch it again",
            path.display(),
            bytes.len()
        );
    }
    let dims = (0..ndims)
        .map(|d| be_u32(bytes, 4 + 4 * d) as usize)
        .collect();
    Ok((dims, &bytes[header..]))
}

/// Checks that `payload` holds exactly `want` bytes, as the header of `path` promises.
fn check_length(path: &Path, payload: &[u8], want: usize, promise: &str) -> Result<()> {
    if payload.len() < want {
        bail!(
            "{} is truncated: the header promises {promise} = {want} bytes of data, \
             the file holds {}; fetch it again (`diffusion data`)",
            path.display(),
            payload.len()
        );
    }
    if payload.len() > want {
        bail!(
            "{} has {} bytes after the {want} that its header promises ({promise}); \
             the file is damaged, fetch it again (`diffusion data`)",
            path.display(),
            payload.len() - want
        );
    }
    Ok(())
}

/// Reads an IDX images file (magic `0x00000803`, dims `count, rows, cols`).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_bytes(path)?;
    let (dims, payload) = parse_header(path, &bytes, IMAGES_MAGIC, "images")?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if rows == 0 || cols == 0 {
        bail!(
            "{} declares images of {rows}x{cols} pixels; expected at least 1x1",
            path.display()
        );
    }
    let want = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .with_context(|| format!("{}: header sizes overflow", path.display()))?;
    check_length(
        path,
        payload,
        want,
        &format!("{count} images of {rows}x{cols}"),
    )?;
    IdxImages::new(count, rows, cols, payload.to_vec())
}

/// Reads an IDX labels file (magic `0x00000801`, dim `count`).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_bytes(path)?;
    let (dims, payload) = parse_header(path, &bytes, LABELS_MAGIC, "labels")?;
    check_length(path, payload, dims[0], &format!("{} labels", dims[0]))?;
    Ok(payload.to_vec())
}

fn dim_u32(path: &Path, n: usize) -> Result<[u8; 4]> {
    let n = u32::try_from(n).with_context(|| {
        format!(
            "{}: dimension {n} does not fit an IDX header",
            path.display()
        )
    })?;
    Ok(n.to_be_bytes())
}

/// The bytes of an IDX images file, uncompressed.
pub fn encode_idx_images(path: &Path, images: &IdxImages) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(16 + images.pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for n in [images.count, images.rows, images.cols] {
        out.extend_from_slice(&dim_u32(path, n)?);
    }
    out.extend_from_slice(&images.pixels);
    Ok(out)
}

/// The bytes of an IDX labels file, uncompressed.
pub fn encode_idx_labels(path: &Path, labels: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&dim_u32(path, labels.len())?);
    out.extend_from_slice(labels);
    Ok(out)
}

/// Writes `bytes` (gzipped when `path` ends in `.gz`) to a temporary file beside `path` and
/// returns that file's path; renaming it to `path` is left to the caller, so that several files
/// can be replaced together once all of them are complete.
pub(crate) fn write_partial(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = crate::files::temp_path(path)?;
    let result = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        if is_gz(path) {
            let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            gz.write_all(bytes)?;
            gz.finish()?.sync_all()?;
        } else {
            let mut file = file;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", tmp.display()));
    }
    Ok(tmp)
}

/// Renames a finished temporary file onto its final name.
pub(crate) fn commit_partial(tmp: &Path, path: &Path) -> Result<()> {
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_partial(path, bytes)?;
    commit_partial(&tmp, path)
}

/// Writes an IDX images file (gzipped if `path` ends in `.gz`) through a temporary file, so
/// that `path` is never left half written.
pub fn write_idx_images(path: &Path, images: &IdxImages) -> Result<()> {
    write_atomic(path, &encode_idx_images(path, images)?)
}

/// Writes an IDX labels file (gzipped if `path` ends in `.gz`) through a temporary file.
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<()> {
    write_atomic(path, &encode_idx_labels(path, labels)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IdxImages {
        // 3 images of 2x4, pixel value = 10 * image + position (distinct bytes everywhere).
        let pixels = (0..3u8)
            .flat_map(|i| (0..8u8).map(move |p| 10 * i + p))
            .collect();
        IdxImages::new(3, 2, 4, pixels).unwrap()
    }

    #[test]
    fn header_bytes_follow_the_idx_layout() {
        let p = Path::new("x");
        let bytes = encode_idx_images(p, &sample()).unwrap();
        // magic 0x00000803, then 3, 2, 4 as big-endian u32, then the 24 pixels.
        assert_eq!(
            &bytes[..16],
            &[0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 4]
        );
        assert_eq!(bytes.len(), 16 + 24);
        assert_eq!(bytes[16 + 9], 11); // image 1, position 1
        let labels = encode_idx_labels(p, &[7, 44, 0]).unwrap();
        assert_eq!(labels, vec![0, 0, 8, 1, 0, 0, 0, 3, 7, 44, 0]);
    }

    #[test]
    fn round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["imgs", "imgs.gz"] {
            let path = dir.path().join(name);
            write_idx_images(&path, &sample()).unwrap();
            assert_eq!(read_idx_images(&path).unwrap(), sample());
        }
        for name in ["labels", "labels.gz"] {
            let path = dir.path().join(name);
            write_idx_labels(&path, &[9, 0, 3, 255]).unwrap();
            assert_eq!(read_idx_labels(&path).unwrap(), vec![9, 0, 3, 255]);
        }
        // The gz file really is gzip (magic 1f 8b), the raw one really is IDX.
        let gz = std::fs::read(dir.path().join("imgs.gz")).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let raw = std::fs::read(dir.path().join("imgs")).unwrap();
        assert_eq!(&raw[..4], &[0, 0, 8, 3]);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad-images");
        let good = encode_idx_images(&path, &sample()).unwrap();

        // Wrong magic: a labels header where images are expected, and the reverse.
        std::fs::write(&path, encode_idx_labels(&path, &[1, 2]).unwrap()).unwrap();
        let e = err_of(read_idx_images(&path));
        assert!(e.contains("bad-images") && e.contains("magic"), "{e}");
        assert!(e.contains("0x00000801") && e.contains("0x00000803"), "{e}");
        std::fs::write(&path, &good).unwrap();
        let e = err_of(read_idx_labels(&path));
        assert!(e.contains("bad-images") && e.contains("magic"), "{e}");

        // Truncated payload, truncated header, empty file.
        for cut in [good.len() - 1, 10, 0] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let e = err_of(read_idx_images(&path));
            assert!(
                e.contains("bad-images") && e.contains("truncated"),
                "{cut}: {e}"
            );
        }
        // Extra bytes after the promised data.
        let mut long = good.clone();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        let e = err_of(read_idx_images(&path));
        assert!(
            e.contains("bad-images") && e.contains("1 bytes after"),
            "{e}"
        );

        // Corrupt gzip: a .gz file that is not gzip, and a gzip stream cut short.
        let gz = dir.path().join("bad-images.gz");
        std::fs::write(&gz, &good).unwrap();
        let e = err_of(read_idx_images(&gz));
        assert!(e.contains("bad-images.gz") && e.contains("gzip"), "{e}");
        write_idx_images(&gz, &sample()).unwrap();
        let whole = std::fs::read(&gz).unwrap();
        std::fs::write(&gz, &whole[..whole.len() / 2]).unwrap();
        let e = err_of(read_idx_images(&gz));
        assert!(e.contains("bad-images.gz") && e.contains("gzip"), "{e}");

        // A gzipped file under a raw name is pointed out.
        let raw_name = dir.path().join("zipped");
        std::fs::write(&raw_name, &whole).unwrap();
        let e = err_of(read_idx_images(&raw_name));
        assert!(e.contains("zipped") && e.contains("gzipped"), "{e}");

        // Zero-sized images.
        let zero = [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 5];
        std::fs::write(&path, zero).unwrap();
        let e = err_of(read_idx_images(&path));
        assert!(e.contains("bad-images") && e.contains("0x5"), "{e}");
    }

    #[test]
    fn idx_images_checks_its_length() {
        assert!(IdxImages::new(2, 2, 2, vec![0; 7]).is_err());
        let s = sample();
        assert_eq!(s.image(2).unwrap()[0], 20);
        assert!(s.image(3).is_none());
    }
}
