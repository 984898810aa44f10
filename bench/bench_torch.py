"""The PyTorch side of the benchmark: the course network (tests/fixtures/unet_torch.py) timed on
the same workloads as `diffusion bench`, printed in the same format:

    train_step_ms=… sample150_ms=… sample150x64_ms=…

A training step is: forward in training mode on 128 images, MSE against the noise, backward, Adam.
Sampling runs the 150 reverse steps in evaluation mode. Each figure is the median of --runs runs
after one warm-up. `--train-steps N` instead runs N training steps (for peak-memory measurements).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
from unet_torch import UNet, Schedule, q, reverse_q  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--runs", type=int, default=10)
p.add_argument("--threads", type=int, default=0, help="0: PyTorch's own default")
p.add_argument("--device", default="cpu")
p.add_argument("--train-steps", type=int, default=0)
args = p.parse_args()
if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)
dev = torch.device(args.device)
model = UNet().to(dev)
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
