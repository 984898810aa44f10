//! The FashionMNIST classifier whose features the scores compare: two of notebook 02's
//! [`DownBlock`]s, then a fully connected feature layer and the class layer.
//!
//! ```text
//! x [N,1,16,16] ─ block1 ─ [N,32,8,8] ─ block2 ─ [N,64,4,4] ─ flatten ─ fc + ReLU ─ features [N,128] ─ head ─ logits [N,10]
//! ```
//!
//! The same network reads other sides `S` (a multiple of 4) with `fc` taking `64 (S/4)^2`
//! inputs: [`Classifier::with_size`]; [`Classifier::load`] reads `S` from `fc.weight`. The
//! digit classifier of the assessment ([`super::digits`]) is this one at `S = 28`.
//!
//! Each block is `Conv → BN → ReLU → Conv → BN → ReLU → MaxPool2d(2)`. The features are the
//! penultimate layer, `relu(W x + b)`: the summary of an image the Fréchet distance and KID
//! compare. Tensors are named as a PyTorch module with the same attribute names would name them
//! (`block1.model.0.weight`, `fc.bias`, ...), and saved as safetensors.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use super::Matrix;
use crate::layers::{flatten, relu, Linear};
use crate::notebook02::DownBlock;

/// Width of the feature (penultimate) layer.
pub const FEATURES: usize = 128;
/// Number of classes.
pub const CLASSES: usize = 10;
/// Channels after `block1` and `block2`.
pub const CHANNELS: [usize; 2] = [32, 64];
/// Images per forward pass when classifying many.
pub const BATCH: usize = 500;

/// Where the course's classifier is: `<workspace root>/docs/classifier.safetensors`.
pub fn course_path() -> PathBuf {
    crate::data::workspace_root()
        .join("docs")
        .join("classifier.safetensors")
}

/// The classifier and the `VarMap` that holds its tensors.
#[derive(Clone)]
pub struct Classifier {
    pub block1: DownBlock,
    pub block2: DownBlock,
    /// `[N, 1024] -> [N, FEATURES]`, followed by a ReLU.
    pub fc: Linear,
    /// `[N, FEATURES] -> [N, 10]`.
    pub head: Linear,
    pub varmap: VarMap,
    /// Side `S` of the images it reads (`[N, 1, S, S]`): 16 for the course's.
    pub img_size: usize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("block1", &self.block1)
            .field("block2", &self.block2)
            .field("fc", &self.fc)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// What the classifier makes of a set of images.
#[derive(Debug, Clone)]
pub struct Classified {
    /// The penultimate features, one row per image: `N x FEATURES`, f64.
    pub features: Matrix,
    /// The predicted class of each image (`0..=9`, see [`CLASS_NAMES`](crate::data::CLASS_NAMES)).
    pub labels: Vec<u8>,
}

impl Classifier {
    /// A new classifier with PyTorch's default initialisation drawn from `rng`.
    pub fn new(device: &Device, rng: &mut crate::Rng) -> Result<Self> {
        Self::with_size(crate::settings::IMG_SIZE, device, rng)
    }

    /// A new classifier of `[N, 1, img_size, img_size]` images (`img_size` a multiple of 4).
    pub fn with_size(img_size: usize, device: &Device, rng: &mut crate::Rng) -> Result<Self> {
        let classifier = Self::build(VarMap::new(), img_size, device)?;
        crate::checkpoint::init_weights(&classifier.varmap, rng)?;
        Ok(classifier)
    }

    fn build(varmap: VarMap, img_size: usize, device: &Device) -> Result<Self> {
        if img_size == 0 || !img_size.is_multiple_of(4) {
            bail!("the classifier halves the image twice: its side must be a multiple of 4, got {img_size}");
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let [c1, c2] = CHANNELS;
        let side = img_size / 4;
        Ok(Self {
            block1: DownBlock::new(crate::settings::IMG_CH, c1, vb.pp("block1"))?,
            block2: DownBlock::new(c1, c2, vb.pp("block2"))?,
            fc: Linear::new(c2 * side * side, FEATURES, vb.pp("fc"))?,
            head: Linear::new(FEATURES, CLASSES, vb.pp("head"))?,
            varmap,
            img_size,
        })
    }

    /// The course's classifier, `docs/classifier.safetensors` of the workspace (trained on the
    /// 60,000 train images; test accuracy 0.8852), wherever the caller runs.
    pub fn course(device: &Device) -> Result<Self> {
        Self::load(&course_path(), device)
    }

    /// The classifier saved at `path` by [`Classifier::save`]; the file must hold exactly its
    /// tensors, with their shapes.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.is_file() {
            bail!(
                "classifier {} does not exist: train one with `diffusion classifier train --out {}` \
                 (the course's is docs/classifier.safetensors)",
                path.display(),
                path.display()
            );
        }
        let tensors = crate::checkpoint::read_tensors(path)?;
        if !tensors.contains_key("head.weight") {
            let mut names: Vec<&String> = tensors.keys().collect();
            names.sort();
            let shown: Vec<&str> = names.iter().take(3).map(|n| n.as_str()).collect();
            bail!(
                "{} is not a classifier of diffusion::eval: it has no `head.weight` (it holds {} \
                 tensors such as {}; a diffusion model's checkpoint?): give the file written by \
                 `diffusion classifier train`, such as docs/classifier.safetensors",
                path.display(),
                names.len(),
                shown.join(", ")
            );
        }
        // fc takes 64 (S/4)^2 inputs: the side S of the images the file was trained on.
        let img_size = match tensors
            .get("fc.weight")
            .map(|t| t.dims().to_vec())
            .as_deref()
        {
            Some([_, inputs]) => {
                let cells = inputs / CHANNELS[1];
                let side = (cells as f64).sqrt().round() as usize;
                if side * side * CHANNELS[1] == *inputs {
                    4 * side
                } else {
                    crate::settings::IMG_SIZE
                }
            }
            _ => crate::settings::IMG_SIZE,
        };
        let classifier = Self::build(VarMap::new(), img_size, device)?;
        crate::checkpoint::load(&classifier.varmap, path).map_err(|e| {
            e.context(format!(
                "{} is not a classifier of diffusion::eval (was it written by `diffusion classifier train`?)",
                path.display()
            ))
        })?;
        Ok(classifier)
    }

    /// Writes every tensor (weights and BatchNorm statistics) to `path` as safetensors, through a
    /// temporary file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::checkpoint::save(&self.varmap, path)
    }

    /// The device its tensors live on.
    pub fn device(&self) -> &Device {
        self.fc.weight.device()
    }

    /// Number of trainable parameters.
    pub fn parameters(&self) -> usize {
        crate::checkpoint::count_parameters(&self.varmap)
    }

    /// The BatchNorm statistics, which training changes outside the optimizer.
    pub fn buffers(&self) -> Vec<&Var> {
        [&self.block1, &self.block2]
            .into_iter()
            .flat_map(|b| [&b.first.bn, &b.second.bn])
            .flat_map(|bn| [&bn.running_mean, &bn.running_var, &bn.num_batches_tracked])
            .collect()
    }

    /// The penultimate features `relu(fc(flatten(blocks(x))))`. With `train`, BatchNorm uses and
    /// records the batch's statistics.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.block1.forward_t(x, train)?; // [N, 32, S/2, S/2]
        let h = self.block2.forward_t(&h, train)?; // [N, 64, S/4, S/4]
        let h = flatten(&h)?; // [N, 64 (S/4)^2]
        Ok(relu(&self.fc.forward(&h)?)?) // [N, FEATURES]
    }

    /// The class scores (logits) of `x`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let f = self.features_t(x, train)?; // [N, FEATURES]
        Ok(self.head.forward(&f)?) // [N, 10]
    }

    /// Features and predicted classes of `images` (`[N, 1, S, S]` f32 in `[-1, 1]`, checked),
    /// in evaluation mode, [`BATCH`] images at a time.
    pub fn classify(&self, images: &Tensor) -> Result<Classified> {
        let n = super::check_images_of(images, self.img_size)?;
        let mut rows: Vec<f64> = Vec::with_capacity(n * FEATURES);
        let mut labels = Vec::with_capacity(n);
        for start in (0..n).step_by(BATCH) {
            let len = BATCH.min(n - start);
            let x = images.narrow(0, start, len)?.to_device(self.device())?; // [B, 1, S, S]
            let f = self.features_t(&x, false)?; // [B, FEATURES]
            let logits = self.head.forward(&f)?; // [B, 10]
            labels.extend(
                logits
                    .argmax(1)?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|l| l as u8),
            );
            let f: Vec<f32> = f.flatten_all()?.to_vec1()?;
            rows.extend(f.into_iter().map(f64::from));
        }
        if rows.iter().any(|v| !v.is_finite()) {
            bail!(
                "the classifier's features are not finite (NaN or infinite): its weights are \
                 damaged; train it again with `diffusion classifier train`"
            );
        }
        Ok(Classified {
            features: Matrix::from_vec(n, FEATURES, rows)?,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_names_and_a_save_load_round_trip() {
        let dev = Device::Cpu;
        let c = Classifier::new(&dev, &mut crate::Rng::new(0)).unwrap();
        // 2 blocks (conv + BN twice each), fc 1024 -> 128, head 128 -> 10.
        let convs = (9 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64);
        let bns = 2 * (32 + 32 + 64 + 64);
        assert_eq!(
            c.parameters(),
            convs + bns + 1024 * 128 + 128 + 128 * 10 + 10
        );
        let names = crate::checkpoint::state_dict(&c.varmap).unwrap();
        for name in [
            "block1.model.0.weight",
            "block2.model.4.running_var",
            "fc.weight",
            "head.bias",
        ] {
            assert!(names.contains_key(name), "{name}");
        }
        assert_eq!(c.buffers().len(), 12);

        let x = crate::Rng::new(1)
            .randn((7, 1, 16, 16), &dev)
            .unwrap()
            .clamp(-1f32, 1f32)
            .unwrap();
        assert_eq!(c.forward_t(&x, false).unwrap().dims(), &[7, 10]);
        let out = c.classify(&x).unwrap();
        assert_eq!(out.features.shape(), (7, FEATURES));
        assert_eq!(out.labels.len(), 7);
        assert!(out.labels.iter().all(|&l| l < 10));
        assert!(
            out.features.iter().all(|&v| v >= 0.0),
            "features follow a ReLU"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        c.save(&path).unwrap();
        let back = Classifier::load(&path, &dev).unwrap();
        assert_eq!(back.classify(&x).unwrap().features, out.features);
    }

    #[test]
    fn loading_a_missing_or_foreign_file_is_an_error_that_says_what_to_do() {
        let dev = Device::Cpu;
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.safetensors");
        let e = format!("{:#}", Classifier::load(&missing, &dev).unwrap_err());
        assert!(
            e.contains("diffusion classifier train") && e.contains("none.safetensors"),
            "{e}"
        );

        let (_, varmap) = crate::checkpoint::new_unet(&dev).unwrap();
        let unet = dir.path().join("unet.safetensors");
        crate::checkpoint::save(&varmap, &unet).unwrap();
        let e = format!("{:#}", Classifier::load(&unet, &dev).unwrap_err());
        assert!(
            e.contains("not a classifier") && e.contains("dense_emb.0.bias"),
            "{e}"
        );
        assert!(e.len() < 500, "{e}");
        // A classifier file with a tensor missing: the strict check names it.
        let c = Classifier::new(&dev, &mut crate::Rng::new(0)).unwrap();
        let mut t = crate::checkpoint::state_dict(&c.varmap).unwrap();
        t.remove("fc.bias");
        let partial = dir.path().join("partial.safetensors");
        crate::checkpoint::save_tensors(&t, &partial).unwrap();
        let e = format!("{:#}", Classifier::load(&partial, &dev).unwrap_err());
        assert!(
            e.contains("not a classifier") && e.contains("missing `fc.bias`"),
            "{e}"
        );
    }

    #[test]
    fn classify_checks_its_input() {
        let c = Classifier::new(&Device::Cpu, &mut crate::Rng::new(0)).unwrap();
        let big = Tensor::full(3f32, (2, 1, 16, 16), &Device::Cpu).unwrap();
        assert!(format!("{:#}", c.classify(&big).unwrap_err()).contains("[-1, 1]"));
    }
}
