#!/usr/bin/env python3
"""The statistics of FashionMNIST and of the course run's loss history that
`walkthroughs/02_diffusion.md` quotes, computed with Pillow and NumPy alone (no Rust).

`tests/tests/walkthrough.rs` holds the numbers this script prints as its expected values and
checks the crate against them, so the two computations are independent: here the images are
decoded from the IDX files by hand, resized with Pillow itself (torchvision's `Resize((16, 16))`
on a PIL image is `Image.resize((16, 16), Image.BILINEAR)`), and the schedule is rebuilt with
NumPy.

Usage, from the repository root (needs `pip install pillow numpy`):

    python3 walkthroughs/data_stats.py [DATA_DIR] [LOSSES_CSV]

DATA_DIR defaults to $DIFFUSION_DATA, else data/fashion-mnist; LOSSES_CSV to
docs/losses-3-epochs.csv.
"""
import csv
import gzip
import math
import os
import sys

import numpy as np
from PIL import Image

T = 150
BACKGROUND = -0.9
WINDOW = 0.125
# 70,000 images make 546 full batches of 128 an epoch
LOSS_RANGES = [(1, 10), (11, 100), (101, 546), (547, 1092), (1093, 1638)]


def read_idx_images(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in range(0, 16, 4))
    assert magic == 2051, f"{path}: not an IDX image file (magic {magic})"
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


def find(data_dir, name):
    for candidate in (name + ".gz", name):
        p = os.path.join(data_dir, candidate)
        if os.path.exists(p):
            return p
    sys.exit(f"{name}(.gz) is not in {data_dir}: fetch the data with `diffusion data` first")


def course_images(data_dir):
    """The course's training images: the train split, then the test split (70,000)."""
    raw = np.concatenate(
        [read_idx_images(find(data_dir, f"{split}-images-idx3-ubyte")) for split in ("train", "t10k")]
    )
    small = np.stack(
        [np.asarray(Image.fromarray(im).resize((16, 16), Image.BILINEAR)) for im in raw]
    )
    return small.astype(np.float64) / 255.0 * 2.0 - 1.0  # [N, 16, 16]


def linear_a_bar():
    betas = np.linspace(0.0001, 0.02, T)
    return np.cumprod(1.0 - betas)


def phi(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default_data = os.environ.get("DIFFUSION_DATA") or os.path.join(root, "data", "fashion-mnist")
    data_dir = sys.argv[1] if len(sys.argv) > 1 else default_data
    losses_csv = sys.argv[2] if len(sys.argv) > 2 else os.path.join(root, "docs", "losses-3-epochs.csv")

    x = course_images(data_dir)
    a_bar = linear_a_bar()
    print(f"images: {x.shape[0]}")
    print(f"mean pixel: {x.mean():.6f}")
    print(f"pixel variance (all pixels together): {x.var():.6f}")
    print(f"share of pixels below {BACKGROUND}: {(x < BACKGROUND).mean():.6f}")
    image_means = x.reshape(len(x), -1).mean(axis=1)
    print(f"standard deviation of the per-image mean: {image_means.std():.6f}")

    # the best linear noise predictor that sees one pixel: a_bar s2 / (a_bar s2 + 1 - a_bar),
    # averaged over the 256 pixel positions and then over the 150 timesteps
    s2 = x.reshape(len(x), -1).var(axis=0)
    floor = np.mean([np.mean(ab * s2 / (ab * s2 + 1.0 - ab)) for ab in a_bar])
    print(f"one-pixel linear predictor's loss, averaged over t: {floor:.6f}")

    # the average pixel of x_149 = sqrt(a_bar) x_0 + sqrt(1 - a_bar) e is
    # N(sqrt(a_bar) mean(x_0), (1 - a_bar) / 256): the expected share inside +-WINDOW
    c, sd = math.sqrt(a_bar[-1]), math.sqrt(1.0 - a_bar[-1]) / 16.0
    inside = np.mean([phi((WINDOW - c * m) / sd) - phi((-WINDOW - c * m) / sd) for m in image_means])
    print(f"expected share of x_{T - 1} whose average pixel is within +-{WINDOW}: {inside:.6f}")

    with open(losses_csv, newline="") as f:
        losses = {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f)}
    print(f"loss history {losses_csv}: {len(losses)} steps")
    for lo, hi in LOSS_RANGES:
        v = [losses[s] for s in range(lo, hi + 1) if s in losses]
        if v:
            print(f"mean loss of steps {lo}..{hi}: {sum(v) / len(v):.6f}")


if __name__ == "__main__":
    main()
