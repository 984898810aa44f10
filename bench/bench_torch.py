"""The PyTorch side of the benchmark: the course network (tests/fixtures/unet_torch.py, or with
`--model optimized` notebook 03's, tests/fixtures/unet03_torch.py) timed on the same workloads as
`diffusion bench [--model optimized]`, printed in the same format:

    train_step_ms=… sample150_ms=… sample150x64_ms=…

A training step is: forward in training mode on 128 images, MSE against the noise, backward, Adam.
Sampling runs the 150 reverse steps in evaluation mode. Each figure is the median of --runs runs
after one warm-up. `--train-steps N` instead runs N training steps (for peak-memory measurements).

`--device cuda` runs on the GPU; every timed call ends with `torch.cuda.synchronize()`, so the
figures include the GPU's work. `--tf32 on|off` sets TF32 for float32 matrix products and
convolutions (`torch.backends.cuda.matmul` and `torch.backends.cudnn.conv`); `default` leaves
PyTorch's own settings (matrix products in full float32, cuDNN convolutions allowed TF32). What
was used goes to stderr (device, versions, TF32), so stdout keeps the one line above.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
from unet_torch import UNet, Schedule, q, reverse_q  # noqa: E402
import unet03_torch  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--runs", type=int, default=10)
p.add_argument("--threads", type=int, default=0, help="0: PyTorch's own default")
p.add_argument("--device", default="cpu")
p.add_argument("--train-steps", type=int, default=0)
p.add_argument("--model", choices=["basic", "optimized"], default="basic",
               help="notebook 02's network (basic) or notebook 03's (optimized)")
p.add_argument("--tf32", choices=["default", "on", "off"], default="default",
               help="TF32 for float32 matrix products and convolutions on CUDA")
args = p.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)
dev = torch.device(args.device)
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"--device {args.device}: torch {torch.__version__} sees no CUDA device "
             f"(built for CUDA {torch.version.cuda})")


def set_tf32(on):
    """TF32 on or off for float32 matrix products and cuDNN convolutions."""
    mm, conv = ("tf32", "tf32") if on else ("ieee", "ieee")
    matmul = torch.backends.cuda.matmul
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and cudnn_conv is not None:
        # the API of torch >= 2.9; mixing it with the flags below is an error there
        matmul.fp32_precision = mm
        cudnn_conv.fp32_precision = conv
    else:
        matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def tf32_state():
    matmul = torch.backends.cuda.matmul
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and cudnn_conv is not None:
        return f"matmul {matmul.fp32_precision}, cudnn conv {cudnn_conv.fp32_precision}"
    return f"matmul allow_tf32={matmul.allow_tf32}, cudnn allow_tf32={torch.backends.cudnn.allow_tf32}"


if args.tf32 != "default":
    set_tf32(args.tf32 == "on")
name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
print(f"bench_torch: torch {torch.__version__} (CUDA {torch.version.cuda}), device {dev} ({name}), "
      f"tf32 {args.tf32}: {tf32_state()}, threads {torch.get_num_threads()}", file=sys.stderr)
model = (UNet() if args.model == "basic" else unet03_torch.UNet()).to(dev)
sched = Schedule()
for name in Schedule.NAMES:
    setattr(sched, name, getattr(sched, name).to(dev))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x0 = torch.randn(128, 1, 16, 16, device=dev).clamp(-1, 1)
T = 150


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def train_step():
    model.train()
    t = torch.randint(0, T, (128,), device=dev)
    noise = torch.randn_like(x0)
    x_t = q(sched, x0, t, noise)
    loss = torch.nn.functional.mse_loss(noise, model(x_t, t))
    opt.zero_grad()
    loss.backward()
    opt.step()
    sync()


@torch.no_grad()
def sample(n):
    model.eval()
    x = torch.randn(n, 1, 16, 16, device=dev)
    for i in reversed(range(T)):
        t = torch.full((n,), i, device=dev)
        x = reverse_q(sched, x, i, model(x, t), torch.randn_like(x))
    sync()


def median_ms(runs, f):
    f()
    times = []
    for _ in range(max(runs, 1)):
        start = time.perf_counter()
        f()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


if args.train_steps:
    # hold a training set the size of FashionMNIST's (60,000 images of 16 x 16, float32), as
    # `diffusion train` does, and draw the batches from it
    data = torch.rand(60000, 1, 16, 16) * 2 - 1
    for i in range(args.train_steps):
        x0 = data[i * 128:(i + 1) * 128].to(dev)
        train_step()
    print(f"trained {args.train_steps} steps")
    sys.exit(0)

train_ms = median_ms(args.runs, train_step)
s1 = median_ms(args.runs, lambda: sample(1))
s64 = median_ms((args.runs + 2) // 3, lambda: sample(64))
print(f"train_step_ms={train_ms:.1f} sample150_ms={s1:.1f} sample150x64_ms={s64:.1f}")
