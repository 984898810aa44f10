//! The crate's Adam against `torch.optim.Adam` over six steps with gradients that vary from step
//! to step (`tests/fixtures/make_adam_fixture.py`). The distance each parameter has moved from its
//! start is compared, so that a wrong moment or bias correction, which changes that distance by
//! far more than rounding, cannot hide behind the size of the weights.

use candle_core::{DType, Device, Tensor, Var};
use diffusion::adam::Adam;

fn rel(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.to_dtype(DType::F64).unwrap();
    let b = b.to_dtype(DType::F64).unwrap();
    let d = (&a - &b).unwrap().sqr().unwrap().sum_all().unwrap();
    let n = b.sqr().unwrap().sum_all().unwrap();
    (d.to_scalar::<f64>().unwrap() / n.to_scalar::<f64>().unwrap()).sqrt()
}

#[test]
fn adam_follows_torch_optim_adam_step_by_step() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/adam.safetensors");
    let f = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    let params = vec![
        ("a".to_string(), Var::from_tensor(&f["w0.a"]).unwrap()),
        ("b".to_string(), Var::from_tensor(&f["w0.b"]).unwrap()),
    ];
    let mut adam = Adam::new(1e-3);
    for k in 1..=6 {
        // loss = sum(a * g_a) + sum(b * g_b) has exactly the stored gradients
        let loss = ((params[0].1.as_tensor() * &f[&format!("g{k}.a")])
            .unwrap()
            .sum_all())
        .unwrap()
        .add(
            &(params[1].1.as_tensor() * &f[&format!("g{k}.b")])
                .unwrap()
                .sum_all()
                .unwrap(),
        )
        .unwrap();
        adam.backward_step(&params, &loss).unwrap();
        for (name, var) in &params {
            let start = &f[&format!("w0.{name}")];
            let moved = (var.as_tensor() - start).unwrap();
            let want = (&f[&format!("w{k}.{name}")] - start).unwrap();
            let e = rel(&moved, &want);
            assert!(
                e < 1e-4,
                "step {k}, {name}: moved {e:e} (relative) off PyTorch's"
            );
        }
    }
    assert_eq!(adam.steps(), 6);
}
