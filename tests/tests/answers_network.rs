//! The answers' claims about the network and the samplers, checked on the real thing: the shape
//! arithmetic of `answers::theory` against the U-Net's actual tensors (answers/assignment4.md
//! Q4, answers/ddpm-math.md Q9, Q14, Q15, Q16).

use candle_core::{DType, Device, Module, Tensor};
use diffusion::checkpoint::new_unet;
use diffusion::{q_with_noise, reverse_q_with_noise, Rng, Schedule};

#[test]
fn stage_shapes_match_the_shape_arithmetic() {
    let dev = Device::Cpu;
    let (unet, _) = new_unet(&dev).unwrap();
    let x = Rng::new(0).randn((2, 1, 16, 16), &dev).unwrap();
    let d0 = unet.layers.down0.forward_t(&x, false).unwrap();
    let d1 = unet.layers.down1.forward_t(&d0, false).unwrap();
    let d2 = unet.layers.down2.forward_t(&d1, false).unwrap();
    let up0 = unet.layers.up0.forward_t(&d2, false).unwrap();
    let up1 = unet.layers.up1.forward_t(&up0, &d2, false).unwrap();
    let up2 = unet.layers.up2.forward_t(&up1, &d1, false).unwrap();
    let t = Tensor::new(&[0u32, 149], &dev).unwrap();
    let out = unet.forward_t(&x, &t, false).unwrap();
    let real = [
        ("down0", &d0),
        ("down1", &d1),
        ("down2", &d2),
        ("up0", &up0),
        ("up1", &up1),
        ("up2", &up2),
        ("out", &out),
    ];
    let trace = answers::theory::shapes::course_unet_trace().unwrap();
    assert_eq!(trace.len(), real.len());
    for ((name, ch, side), (real_name, tensor)) in trace.iter().zip(real) {
        assert_eq!(*name, real_name);
        assert_eq!(tensor.dims(), &[2, *ch, *side, *side], "{name}");
    }
    // the bottleneck: 64 channels of 4 x 4 = 1024 numbers per image
    assert_eq!(d2.flatten_from(1).unwrap().dim(1).unwrap(), 1024);
}

#[test]
fn time_embeddings_are_per_channel_shifts() {
    let dev = Device::Cpu;
    let (unet, _) = new_unet(&dev).unwrap();
    let t = Tensor::new(&[[0f32], [149.0 / 150.0]], &dev).unwrap();
    assert_eq!(unet.temb_1.forward(&t).unwrap().dims(), &[2, 64, 1, 1]);
    assert_eq!(unet.temb_2.forward(&t).unwrap().dims(), &[2, 32, 1, 1]);
    // the first linear layer of an EmbedBlock sees t / T, so a layer's output is affine in it
    let lin = &unet.temb_1.lin1;
    let y = lin.forward(&t).unwrap();
    let w: Vec<f32> = lin.weight.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = lin.bias.to_vec1().unwrap();
    let row1: Vec<f32> = y.get(1).unwrap().to_vec1().unwrap();
    for i in 0..64 {
        let want = w[i] * (149.0 / 150.0) + b[i];
        assert!((row1[i] - want).abs() < 1e-6);
    }
}

#[test]
fn q_broadcasts_one_timestep_per_image() {
    let dev = Device::Cpu;
    let s = Schedule::course(&dev).unwrap();
    let x0 = Tensor::ones((128, 1, 16, 16), DType::F32, &dev).unwrap();
    let t = Tensor::arange(0u32, 128, &dev).unwrap();
    let zero = x0.zeros_like().unwrap();
    let x_t = q_with_noise(&s, &x0, &t, &zero).unwrap();
    assert_eq!(x_t.dims(), &[128, 1, 16, 16]);
    // with no noise, image i is sqrt(a_bar[i]) everywhere
    let v = s.values();
    for i in [0usize, 17, 127] {
        let img: Vec<f32> = x_t
            .get(i)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = v.a_bar[i].sqrt() as f32;
        assert!(img.iter().all(|p| (p - want).abs() < 1e-6), "image {i}");
    }
}

#[test]
fn reverse_step_noise_has_std_sqrt_b_t_minus_1_and_none_at_t0() {
    let dev = Device::Cpu;
    let s = Schedule::course(&dev).unwrap();
    let x = Tensor::zeros((1, 1, 16, 16), DType::F32, &dev).unwrap();
    let e = x.zeros_like().unwrap();
    let z = Tensor::ones((1, 1, 16, 16), DType::F32, &dev).unwrap();
    // x_t = 0 and e_t = 0 make the mean 0: what is left is the noise term sqrt(B[t-1]) z
    let v = s.values();
    for t in [1usize, 75, 149] {
        let r: Vec<f32> = reverse_q_with_noise(&s, &x, t, &e, &z)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!((r[0] as f64 - v.b[t - 1].sqrt()).abs() < 1e-7, "t = {t}");
    }
    let r: f32 = reverse_q_with_noise(&s, &x, 0, &e, &z)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert_eq!(r, 0.0, "no noise at t = 0");
    assert!(reverse_q_with_noise(&s, &x, 150, &e, &z).is_err());
}

#[test]
fn sampling_keeps_sixteen_frames_ten_steps_apart() {
    let dev = Device::Cpu;
    let (unet, _) = new_unet(&dev).unwrap();
    let s = Schedule::course(&dev).unwrap();
    let out = diffusion::sample_images(&unet, &s, 1, 15, &mut Rng::new(0)).unwrap();
    assert_eq!(out.frames.len(), 16);
    // one snapshot every T / ncols = 10 steps, the last after the step at t = 0
    assert_eq!(out.frame_steps.last().unwrap(), &Some(0));
    assert_eq!(out.frame_steps[1], Some(140));
}
