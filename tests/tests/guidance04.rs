//! Notebook 04's pieces beyond the network's parity: the context and its mask, class names,
//! the guidance formula, `sample_w`'s layout and snapshots, training on labels, checkpoints,
//! the animation, and the trade-off table's file.

use candle_core::{DType, Device, Tensor};
use diffusion::notebook04::tradeoff::{SummaryRow, TradeoffSummary};
use diffusion::notebook04::{
    class_index, get_context_mask, guided_noise, guided_prediction, mean_pairwise_distance,
    one_hot, sample_class, sample_w, UNet, UNetConfig,
};
use diffusion::{Rng, Schedule, TrainConfig, Trainer};
use diffusion_tests::max_abs_diff;

const CPU: &Device = &Device::Cpu;

fn labels(v: &[u32]) -> Tensor {
    Tensor::new(v, CPU).unwrap()
}

#[test]
fn the_mask_hides_each_element_with_the_drop_probability() {
    let n = 20_000;
    let l: Vec<u32> = (0..n).map(|i| (i % 10) as u32).collect();
    let (c_hot, c_mask) = get_context_mask(&labels(&l), 0.1, &mut Rng::new(3)).unwrap();
    assert_eq!(c_hot.dims(), [n as usize, 10]);
    let hot: Vec<Vec<f32>> = c_hot.to_vec2().unwrap();
    let mask: Vec<Vec<f32>> = c_mask.to_vec2().unwrap();
    for (i, row) in hot.iter().enumerate() {
        let ones: Vec<usize> = (0..10).filter(|&k| row[k] == 1.0).collect();
        assert_eq!(ones, [l[i] as usize], "one-hot row {i}");
    }
    // The label's element survives with probability 0.9: 18,000 expected, sd sqrt(n p q) = 42.
    let kept = (0..n as usize)
        .filter(|&i| mask[i][l[i] as usize] == 1.0)
        .count();
    assert!(
        (17_830..=18_170).contains(&kept),
        "{kept} of {n} labels kept"
    );
    // Drawn per element, not per image: a per-image draw would make every row all 0 or all 1.
    let mixed = mask
        .iter()
        .filter(|r| r.contains(&0.0) && r.contains(&1.0))
        .count();
    // P(a row of 10 is mixed) = 1 - 0.9^10 - 0.1^10 = 0.651.
    assert!(
        (12_700..=13_340).contains(&mixed),
        "{mixed} mixed rows of {n}"
    );
    let e = get_context_mask(&labels(&[1]), 1.5, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("between 0 and 1"), "{e}");
}

#[test]
fn bad_labels_are_refused_with_what_is_expected() {
    let e = one_hot(&labels(&[3, 10]), 10).unwrap_err().to_string();
    assert!(e.contains("label 10") && e.contains("0 to 9"), "{e}");
    let two_d = Tensor::zeros((2, 1), DType::U32, CPU).unwrap();
    let e = one_hot(&two_d, 10).unwrap_err().to_string();
    assert!(e.contains("1-D") && e.contains("[2, 1]"), "{e}");
    let float = Tensor::zeros(2, DType::F32, CPU).unwrap();
    let e = one_hot(&float, 10).unwrap_err().to_string();
    assert!(e.contains("integers"), "{e}");
}

#[test]
fn classes_are_found_by_name_or_index() {
    for (name, want) in [
        ("sneaker", 7),
        ("Sneaker", 7),
        ("Ankle boot", 9),
        ("ankle-boot", 9),
        ("7", 7),
        ("0", 0),
        ("top", 0),
        ("T-shirt", 0),
        ("t-shirt/top", 0),
        ("bag", 8),
    ] {
        assert_eq!(class_index(name).unwrap(), want, "{name}");
    }
    for bad in ["sock", "10", "", "-1"] {
        let e = class_index(bad).unwrap_err().to_string();
        assert!(
            e.contains("0-9") && e.contains("\"ankle boot\""),
            "{bad}: {e}"
        );
    }
}

#[test]
fn guided_noise_is_one_plus_w_times_keep_minus_w_times_drop() {
    let keep = Tensor::ones((3, 1, 2, 2), DType::F32, CPU).unwrap();
    let drop = (Tensor::ones((3, 1, 2, 2), DType::F32, CPU).unwrap() * 3.0).unwrap();
    let w = Tensor::new(&[0f32, -1.0, 2.0], CPU).unwrap();
    let e = guided_noise(&keep, &drop, &w).unwrap();
    let v: Vec<f32> = e.flatten_all().unwrap().to_vec1().unwrap();
    // w = 0: e_keep = 1; w = -1: e_drop = 3; w = 2: 3 * 1 - 2 * 3 = -3.
    assert_eq!(v, [[1f32; 4], [3.0; 4], [-3.0; 4]].concat());
    let e = guided_noise(&keep, &drop, &w.narrow(0, 0, 2).unwrap()).unwrap_err();
    assert!(e.to_string().contains("one w per image"), "{e}");
}

fn small_model() -> (UNet, Schedule) {
    let config = UNetConfig {
        t: 12,
        ..Default::default()
    };
    let (model, _) = diffusion::checkpoint::new_network::<UNet>(config, CPU).unwrap();
    (model, Schedule::linear(12, 1e-4, 0.02, CPU).unwrap())
}

#[test]
fn sample_w_lays_out_weights_by_rows_and_keeps_the_courses_snapshots() {
    let (model, s) = small_model();
    let ws = [-1.0, 0.0, 2.0];
    let g = sample_w(&model, &s, &[7, 1], &ws, 10, &mut Rng::new(5)).unwrap();
    assert_eq!(g.samples.images.dims(), [6, 1, 16, 16]);
    assert_eq!(g.row(2).unwrap().dims(), [2, 1, 16, 16]);
    // t = 11..0: kept when t % 10 == 0 or t < 10, i.e. 10 (as a multiple), 9, ..., 0.
    let kept: Vec<Option<usize>> = g.samples.frame_steps.clone();
    let want: Vec<Option<usize>> = std::iter::once(None)
        .chain((0..=10).rev().map(Some))
        .collect();
    assert_eq!(kept, want);
    assert_eq!(g.frame_grids(2).unwrap().len(), want.len());
    let again = sample_w(&model, &s, &[7, 1], &ws, 10, &mut Rng::new(5)).unwrap();
    let d = max_abs_diff(&g.samples.images, &again.samples.images);
    assert_eq!(d, 0.0, "the same seed gives the same samples");
    // Unguided (w = 0) sample_w and sample_class draw the same stream: the same images.
    let a = sample_w(&model, &s, &[4, 4], &[0.0], 0, &mut Rng::new(9)).unwrap();
    let b = sample_class(&model, &s, 4, 2, 0, &mut Rng::new(9)).unwrap();
    let d = max_abs_diff(&a.samples.images, &b.images);
    assert_eq!(d, 0.0);
    let e = sample_w(&model, &s, &[10], &[0.0], 0, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("class 10"), "{e}");
    let other = Schedule::course(CPU).unwrap();
    let e = sample_w(&model, &other, &[1], &[0.0], 0, &mut Rng::new(0)).unwrap_err();
    assert!(e.to_string().contains("T = 12"), "{e}");
}

#[test]
fn w_minus_one_is_the_model_without_a_class() {
    let (model, _) = small_model();
    let mut rng = Rng::new(2);
    let x = rng.randn((3, 1, 16, 16), CPU).unwrap();
    let t = labels(&[0, 5, 11]);
    let (c_hot, _) = get_context_mask(&labels(&[1, 2, 3]), 0.0, &mut rng).unwrap();
    let w = Tensor::new(&[-1f32; 3], CPU).unwrap();
    let guided = guided_prediction(&model, &x, &t, &c_hot, &w).unwrap();
    let none = model
        .forward(&x, &t, &c_hot, &c_hot.zeros_like().unwrap())
        .unwrap();
    let d = max_abs_diff(&guided, &none);
    // The doubled batch rounds differently from a batch of 3: equal to float precision.
    assert!(d < 1e-5, "{d}");
    let e = model.forward(&x, &t, &c_hot.narrow(0, 0, 2).unwrap(), &c_hot);
    assert!(e.unwrap_err().to_string().contains("c must be [3, 10]"));
}

#[test]
fn the_trainer_takes_labels_and_refuses_to_train_without_them() {
    let config = TrainConfig {
        batch_size: 8,
        max_steps: Some(2),
        ..TrainConfig::course()
    };
    let mut trainer = Trainer::<UNet>::for_network(Default::default(), config, CPU).unwrap();
    let images = Rng::new(1)
        .randn((16, 1, 16, 16), CPU)
        .unwrap()
        .clamp(-1f32, 1f32)
        .unwrap();
    let e = trainer.train(&images, 0, |_, _| Ok(())).unwrap_err();
    assert!(e.to_string().contains("train_with_labels"), "{e}");
    let e = trainer
        .train_with_labels(&images, &[0; 15], 0, |_, _| Ok(()))
        .unwrap_err();
    assert!(e.to_string().contains("16 images need 16 labels"), "{e}");
    let e = trainer
        .train_with_labels(&images, &[12; 16], 0, |_, _| Ok(()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("label 12"), "{e:#}");
    assert_eq!(trainer.step, 0, "no step was taken on bad labels");
    let l: Vec<u8> = (0..16).map(|i| i % 10).collect();
    trainer
        .train_with_labels(&images, &l, 0, |_, _| Ok(()))
        .unwrap();
    assert_eq!(trainer.step, 2);
    assert!(trainer.losses.iter().all(|l| l.is_finite() && *l > 0.0));
    // one step by hand: the labels a [n] tensor, anything else refused before the step
    let batch = images.narrow(0, 0, 8).unwrap();
    let column = Tensor::zeros((8, 1), DType::U32, CPU).unwrap();
    let e = trainer.train_step_with_labels(&batch, &column).unwrap_err();
    assert!(e.to_string().contains("needs 8 labels (shape [8])"), "{e}");
    assert_eq!(trainer.step, 2);
    let loss = trainer
        .train_step_with_labels(&batch, &labels(&[0, 1, 2, 3, 4, 5, 6, 7]))
        .unwrap();
    assert_eq!((trainer.step, trainer.losses.last()), (3, Some(&loss)));

    // The checkpoint holds the course's names and gives back the same network.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    trainer.save(&path).unwrap();
    let back = UNet::load(&path, CPU).unwrap();
    let (c, m) = get_context_mask(&labels(&[3, 8]), 0.0, &mut Rng::new(0)).unwrap();
    let x = images.narrow(0, 0, 2).unwrap();
    let t = labels(&[4, 140]);
    let a = trainer.model.forward(&x, &t, &c, &m).unwrap();
    let b = back.forward(&x, &t, &c, &m).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
}

#[test]
fn the_spread_is_the_mean_distance_between_two_images() {
    // Images of one pixel: 0, 3, 4. Pairs: 3, 4, 1, each counted both ways: 16 / 6.
    let x = Tensor::new(&[0f32, 3.0, 4.0], CPU)
        .unwrap()
        .reshape((3, 1, 1, 1))
        .unwrap();
    let s = mean_pairwise_distance(&x).unwrap();
    assert!((s - 16.0 / 6.0).abs() < 1e-9, "{s}");
    assert!(mean_pairwise_distance(&x.narrow(0, 0, 1).unwrap()).is_err());
}

#[test]
fn the_tradeoff_table_reads_back_what_it_wrote() {
    let row = |w: f64, share: f64| SummaryRow {
        w,
        asked_share: share,
        fd: 100.0 + w,
        kid: 0.05,
        class_kid: 0.2,
        class_fd: f64::NAN,
        spread: 9.5,
    };
    let table = TradeoffSummary {
        rows: vec![row(-1.0, 0.3), row(2.0, 0.9)],
        real: SummaryRow {
            w: f64::NAN,
            class_kid: f64::NAN,
            ..row(0.0, 0.91)
        },
    };
    let text = table.to_csv();
    let back = TradeoffSummary::from_csv(&text).unwrap();
    assert_eq!(back.to_csv(), text);
    assert_eq!(back.rows.len(), 2);
    assert_eq!(
        (back.rows[1].w, back.rows[1].fd, back.real.asked_share),
        (2.0, 102.0, 0.91)
    );
    assert!(back.rows[0].class_fd.is_nan() && back.real.w.is_nan());
    let md = table.markdown();
    assert!(md.contains("| real test images | 0.910 |"), "{md}");
    assert!(
        md.contains("| 2 | 0.900 | 102.0 | 0.05 | 0.20 | - | 9.50 |"),
        "{md}"
    );
    let e = TradeoffSummary::from_csv("w,share\n1,2\n").unwrap_err();
    assert!(e.to_string().contains("diffusion guidance"), "{e}");
    let e = TradeoffSummary::from_csv(&text.replace("0.3,", "x,")).unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}
