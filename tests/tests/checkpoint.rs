//! Checkpoints: round trips, PyTorch's file loading here, and clear errors for bad files.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use diffusion::checkpoint::{load, load_unet, new_unet, read_tensors, save, save_tensors};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn batch() -> (Tensor, Tensor) {
    let dev = Device::Cpu;
    let x = diffusion::Rng::new(5).randn((4, 1, 16, 16), &dev).unwrap();
    let t = Tensor::new(&[0u32, 40, 99, 149], &dev).unwrap();
    (x, t)
}

#[test]
fn save_then_load_gives_the_same_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/model.safetensors");
    let (a, va) = new_unet(&Device::Cpu).unwrap();
    let (x, t) = batch();
    a.forward_t(&x, &t, true).unwrap(); // moves the running statistics away from 0 and 1
    save(&va, &path).unwrap();
    let (b, _) = load_unet(&path, &Device::Cpu).unwrap();
    let (ya, yb) = (a.forward(&x, &t).unwrap(), b.forward(&x, &t).unwrap());
    let diff: f32 = (ya - yb)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(diff, 0.0);
    let nbt: i64 = b.batch_norms()[0]
        .1
        .num_batches_tracked
        .as_tensor()
        .to_scalar()
        .unwrap();
    assert_eq!(nbt, 1);
    // no temporary file is left beside the checkpoint
    let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    // readable by others, like any file the user writes (not the temporary file's 0600)
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644, "{mode:o}");
    }
}

#[test]
fn a_pytorch_state_dict_loads_and_writes_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (_, varmap) = load_unet(&fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let path = dir.path().join("again.safetensors");
    save(&varmap, &path).unwrap();
    let before = read_tensors(&fixture("weights.safetensors")).unwrap();
    let after = read_tensors(&path).unwrap();
    diffusion_tests::assert_same_state(&before, &after);
}

#[test]
fn missing_corrupt_and_mismatched_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, varmap) = new_unet(&Device::Cpu).unwrap();

    let missing = dir.path().join("nope.safetensors");
    let e = format!("{:#}", load(&varmap, &missing).unwrap_err());
    assert!(
        e.contains("nope.safetensors") && e.contains("does not exist"),
        "{e}"
    );

    let good = std::fs::read(fixture("weights.safetensors")).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &good[..good.len() / 2]).unwrap();
    let e = format!("{:#}", load(&varmap, &cut).unwrap_err());
    assert!(
        e.contains("cut.safetensors") && e.contains("corrupt"),
        "{e}"
    );

    // a file with one tensor missing and one of the wrong shape: nothing is loaded
    let mut t = read_tensors(&fixture("weights.safetensors")).unwrap();
    t.remove("out.3.bias");
    t.insert(
        "down0.0.weight".into(),
        Tensor::zeros((16, 1, 5, 5), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    t.insert(
        "extra.weight".into(),
        Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let odd = dir.path().join("odd.safetensors");
    save_tensors(&t, &odd).unwrap();
    let before = varmap.data().lock().unwrap()["down1.model.0.weight"]
        .as_tensor()
        .copy()
        .unwrap();
    let e = format!("{:#}", load(&varmap, &odd).unwrap_err());
    assert!(e.contains("missing `out.3.bias`"), "{e}");
    assert!(
        e.contains("`down0.0.weight`") && e.contains("[16, 1, 5, 5]"),
        "{e}"
    );
    assert!(e.contains("unexpected `extra.weight`"), "{e}");
    let after = varmap.data().lock().unwrap()["down1.model.0.weight"]
        .as_tensor()
        .copy()
        .unwrap();
    let d: f32 = (before - after)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(d, 0.0, "a failed load must not change the weights");
}
