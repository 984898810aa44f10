//! The network's structure: names, shapes, parameter count, and errors for bad input.

use candle_core::{DType, Device, Tensor};
use diffusion::checkpoint::{count_parameters, new_unet, state_dict};

#[test]
fn parameter_count_matches_the_course() {
    let (_, varmap) = new_unet(&Device::Cpu).unwrap();
    // The course notebook prints 240,385 (sum worked out layer by layer in notebook02.md).
    assert_eq!(count_parameters(&varmap), 240_385);
}

/// The summary's layers add up to the course's count, and its shapes are those the forward pass
/// produces: the bottleneck at 4 x 4, the output the image's shape.
#[test]
fn the_summary_adds_up_to_the_course_count() {
    let (unet, _) = new_unet(&Device::Cpu).unwrap();
    let summary = unet.summary();
    assert_eq!(summary.parameters(), 240_385);
    let layer = |name: &str| {
        summary
            .layers
            .iter()
            .find(|l| l.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(layer("down2").output, [64, 4, 4]);
    assert_eq!(layer("up2").output, [16, 16, 16]);
    assert_eq!(layer("out").output, [1, 16, 16]);
    // temb_1: Linear(1, 64) and Linear(64, 64)
    assert_eq!(layer("temb_1").parameters, (64 + 64) + (64 * 64 + 64));
    let text = summary.to_string();
    assert!(text.contains("total parameters: 240,385"), "{text}");
}

#[test]
fn state_dict_has_pytorch_names_and_shapes() {
    let (_, varmap) = new_unet(&Device::Cpu).unwrap();
    let sd = state_dict(&varmap).unwrap();
    let expect: &[(&str, &[usize])] = &[
        ("down0.0.weight", &[16, 1, 3, 3]),
        ("down0.1.running_mean", &[16]),
        ("down1.model.0.weight", &[32, 16, 3, 3]),
        ("down1.model.4.running_var", &[32]),
        ("down2.model.3.weight", &[64, 64, 3, 3]),
        ("dense_emb.0.weight", &[32, 1024]),
        ("dense_emb.4.bias", &[1024]),
        ("temb_1.model.0.weight", &[64, 1]),
        ("temb_2.model.2.weight", &[32, 32]),
        ("up0.1.weight", &[64, 64, 3, 3]),
        ("up0.2.running_var", &[64]),
        ("up1.model.0.weight", &[128, 32, 3, 3]),
        ("up2.model.0.weight", &[64, 16, 3, 3]),
        ("up2.model.3.weight", &[16, 16, 3, 3]),
        ("out.3.weight", &[1, 16, 3, 3]),
        ("out.3.bias", &[1]),
    ];
    for (name, shape) in expect {
        let t = sd.get(*name).unwrap_or_else(|| panic!("missing {name}"));
        assert_eq!(t.dims(), *shape, "{name}");
    }
    let nbt = &sd["out.1.num_batches_tracked"];
    assert_eq!(nbt.dtype(), DType::I64);
    assert_eq!(nbt.rank(), 0);
    // 11 BatchNorms x 3 statistics + 22 conv/linear/bn weights&biases ... every key is one of them
    let bn = sd
        .keys()
        .filter(|k| k.ends_with("num_batches_tracked"))
        .count();
    assert_eq!(bn, 11);
}

#[test]
fn forward_gives_noise_shaped_output() {
    let dev = Device::Cpu;
    let (unet, _) = new_unet(&dev).unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 1, 16, 16), &dev).unwrap();
    let t = Tensor::new(&[0u32, 75, 149], &dev).unwrap();
    assert_eq!(
        unet.forward_t(&x, &t, true).unwrap().dims(),
        &[3, 1, 16, 16]
    );
    let t64 = Tensor::new(&[0i64, 75, 149], &dev).unwrap();
    assert_eq!(
        unet.forward_t(&x, &t64, false).unwrap().dims(),
        &[3, 1, 16, 16]
    );
}

#[test]
fn bad_inputs_are_errors_that_say_what_is_expected() {
    let dev = Device::Cpu;
    let (unet, _) = new_unet(&dev).unwrap();
    let t = Tensor::new(&[1u32, 2], &dev).unwrap();
    let wrong = Tensor::zeros((2, 1, 28, 28), DType::F32, &dev).unwrap();
    let e = unet.forward_t(&wrong, &t, false).unwrap_err().to_string();
    assert!(e.contains("[batch, 1, 16, 16]"), "{e}");
    let x = Tensor::zeros((2, 1, 16, 16), DType::F32, &dev).unwrap();
    let late = Tensor::new(&[1u32, 150], &dev).unwrap();
    let e = unet.forward_t(&x, &late, false).unwrap_err().to_string();
    assert!(e.contains("150") && e.contains("0 to T-1 = 149"), "{e}");
    let neg = Tensor::new(&[-1i64, 3], &dev).unwrap();
    assert!(unet.forward_t(&x, &neg, false).is_err());
    let short = Tensor::new(&[1u32], &dev).unwrap();
    let e = unet.forward_t(&x, &short, false).unwrap_err().to_string();
    assert!(e.contains("one value per image"), "{e}");
    let float_t = Tensor::new(&[1f32, 2.0], &dev).unwrap();
    assert!(unet.forward_t(&x, &float_t, false).is_err());
}
