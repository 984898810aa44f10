"""Runs notebooks headless with the project's Rust kernel.

    nbrun.py prebuild        compile the notebook's dependencies with cargo alone, as evcxr will
                             ask for them (no kernel needed: it runs while the kernel compiles)
    nbrun.py warm            compile the notebook's dependencies once (skipped when up to date)
    nbrun.py run IN OUT      execute notebook IN with the kernel started in IN's directory,
                             write the executed notebook to OUT, print timings

The warm-up runs the notebook's first code cell (its `:dep` lines) and one expression in a
throw-away notebook whose kernel starts in notebooks/, so that the build lands in the same
evcxr directory (notebooks/evcxr.toml, `tmpdir`) that JupyterLab's kernel uses. The pre-build
fills that directory beforehand with the build evcxr would start: the same manifest settings,
`RUSTFLAGS`, target and build variables, so that cargo finds every dependency fresh when the
kernel asks for it, and only the cell's own crate is left for the warm-up.
"""

import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NOTEBOOK = NOTEBOOKS / "02_diffusion.ipynb"
TMPDIR = NOTEBOOKS / ".evcxr"
STAMP = TMPDIR / "warm-stamp"


def say(msg):
    print(f"==> {msg}", flush=True)


def first_code_cell(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = cell["source"]
            return "".join(src) if isinstance(src, list) else src
    raise SystemExit(f"error: {path} has no code cell")


def warm_key():
    """What the compiled dependencies depend on: if none of it changed, the build is warm."""
    h = hashlib.sha256()
    h.update(first_code_cell(NOTEBOOK).encode())
    for f in [NOTEBOOKS / "evcxr.toml", ROOT / "Cargo.lock", ROOT / "diffusion" / "Cargo.toml",
              ROOT / ".tools" / ".crates.toml"]:
        h.update(f.read_bytes() if f.exists() else b"-")
    rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout
    h.update(rustc.encode())
    return h.hexdigest()


def errors_of(nb):
    out = []
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                out.append((i, o.get("evalue", ""), "\n".join(o.get("traceback", []))))
            elif o.get("output_type") == "stream" and o.get("name") == "stderr":
                # evcxr prints an error returned by `?` to stderr.
                text = o.get("text", "")
                out.append((i, "".join(text) if isinstance(text, list) else text, ""))
    return out


def execute(nb, cwd, timeout=1800):
    """Executes `nb` in place with its kernel started in `cwd`; returns per-cell seconds."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, timeout=timeout, kernel_name="rust", allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    times = []
    t0 = time.time()
    with client.setup_kernel():
        started = time.time()
        say(f"kernel started in {started - t0:.1f} s")
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            c0 = time.time()
            client.execute_cell(cell, i)
            times.append((i, time.time() - c0))
            say(f"cell {i} ran in {times[-1][1]:.1f} s")
    return times


def is_warm():
    return STAMP.exists() and STAMP.read_text().strip() == warm_key()


def prepare_tmpdir():
    """Creates evcxr's directory, and empties its build when evcxr.toml changed since."""
    settings = (NOTEBOOKS / "evcxr.toml").read_bytes()
    seen = TMPDIR / "evcxr.toml.built"
    if (TMPDIR / "target").exists() and not (seen.exists() and seen.read_bytes() == settings):
        # Cargo does not notice every change of evcxr's settings (static or dynamic linking,
        # say): start the build afresh.
        say("evcxr.toml changed: removing the old build")
        shutil.rmtree(TMPDIR / "target")
    TMPDIR.mkdir(parents=True, exist_ok=True)
    seen.write_bytes(settings)
    # No copy of the project's Cargo.lock: at each start the kernel first builds its crate with
    # no dependency, which leaves its Cargo.lock with nothing locked, and then resolves the
    # notebook's `:dep` lines afresh, offline (evcxr.toml): the newest versions downloaded. The
    # pre-build resolves afresh online, downloads the newest versions, and so compiles the ones
    # the kernel will ask for.


def evcxr_settings():
    """`(opt_level, {variable: value})`: the optimisation level and the `:build_env` lines of
    notebooks/evcxr.toml."""
    text = (NOTEBOOKS / "evcxr.toml").read_text()
    opt = re.search(r'^opt_level\s*=\s*"?(\w+)"?', text, re.M)
    env = dict(re.findall(r"^:build_env\s+(\w+)=(\S*)", text, re.M))
    return (opt.group(1) if opt else "2"), env


def dependencies(cell):
    """The `[dependencies]` lines of a cell's `:dep` lines, paths made absolute (as evcxr does,
    from the notebook's folder)."""
    lines = []
    for line in cell.splitlines():
        m = re.match(r"^:dep\s+([\w-]+)\s*=\s*(.+)$", line.strip())
        if not m:
            continue
        name, config = m.groups()
        path = re.search(r'path\s*=\s*"([^"]+)"', config)
        if path:
            absolute = os.path.realpath(NOTEBOOKS / path.group(1))
            config = config.replace(path.group(0), f'path = "{absolute}"')
        lines.append(f"{name} = {config}")
    return lines


def cargo_manifest(deps, opt_level="2"):
    """The manifest evcxr 0.22 writes for its crate `ctx` (its `[profile.dev]`), with `deps`."""
    return f"""[package]
name = "ctx"
version = "1.0.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]
path = "src/lib.rs"

[profile.dev]
opt-level = {opt_level}
debug = false
strip = "debuginfo"
rpath = true
lto = false
debug-assertions = true
codegen-units = 16
panic = 'unwind'
incremental = true
overflow-checks = true

[dependencies]
{deps}
"""


def fetch_cuda_variant(deps, target):
    """Downloads what the first cell's commented CUDA line (`features = ["cuda"]`) adds, so that
    the offline kernel finds it: sources only, nothing is compiled."""
    cuda = [re.sub(r"^(diffusion = \{.*?)\s*\}$", r'\1, features = ["cuda"] }', d) for d in deps]
    work = TMPDIR / "fetch-cuda"
    shutil.rmtree(work, ignore_errors=True)
    (work / "src").mkdir(parents=True)
    (work / "src" / "lib.rs").write_text("")
    (work / "Cargo.toml").write_text(cargo_manifest("\n".join(cuda)))
    done = subprocess.run(["cargo", "fetch", "--quiet", "--target", target], cwd=work)
    shutil.rmtree(work, ignore_errors=True)
    if done.returncode != 0:
        say("warning: the CUDA crates could not be downloaded; the notebooks' CUDA line will "
            "need `:offline 0` first (see notebooks/evcxr.toml)")


def host_target():
    info = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split()[1] for line in info.splitlines() if line.startswith("host:"))


def prebuild():
    """Builds the warm-up's dependencies with cargo, in the configuration evcxr 0.22 uses: its
    manifest's `[profile.dev]`, `RUSTFLAGS=-Cprefer-dynamic` (with lld's link argument when evcxr
    would pick lld), `--target <host>`, the target directory `target` and the `:build_env`
    variables. Cargo's fingerprints then match, and the kernel reuses every crate."""
    if is_warm():
        return
    prepare_tmpdir()
    opt_level, build_env = evcxr_settings()
    deps = dependencies(first_code_cell(NOTEBOOK))
    (TMPDIR / "Cargo.toml").write_text(cargo_manifest("\n".join(deps), opt_level))
    src = TMPDIR / "src" / "lib.rs"
    src.parent.mkdir(exist_ok=True)
    if not src.exists():
        src.write_text("")
    flags = ["-Cprefer-dynamic"]
    if not shutil.which("mold") and shutil.which("lld"):
        flags.append("-Clink-arg=-fuse-ld=lld")
    env = dict(os.environ, CARGO_TARGET_DIR="target", CARGO_BUILD_BUILD_DIR="target",
               RUSTFLAGS=" ".join(flags), **build_env)
    t0 = time.time()
    target = host_target()
    done = subprocess.run(["cargo", "build", "--quiet", "--target", target], cwd=TMPDIR, env=env)
    if done.returncode != 0:
        raise SystemExit("error: compiling the notebook's dependencies failed (see above)")
    fetch_cuda_variant(deps, target)
    say(f"the notebook's dependencies compiled in {time.time() - t0:.0f} s")


def warm():
    if is_warm():
        return
    key = warm_key()
    import nbformat

    prepare_tmpdir()
    say("running the notebook's first cell once in the kernel (minutes if its dependencies "
        "are not compiled yet)")
    nb = nbformat.v4.new_notebook()
    nb.metadata = json.loads(NOTEBOOK.read_text())["metadata"]
    nb.cells = [nbformat.v4.new_code_cell(first_code_cell(NOTEBOOK)),
                nbformat.v4.new_code_cell("diffusion::settings::T")]
    t0 = time.time()
    execute(nb, NOTEBOOKS)
    errs = errors_of(nb)
    if errs:
        for i, name, text in errs:
            print(f"cell {i}: {name}", file=sys.stderr)
        raise SystemExit("error: the warm-up run failed (see above)")
    say(f"first cell compiled and run in {time.time() - t0:.0f} s")
    STAMP.write_text(key + "\n")


def run(src, dst):
    import nbformat

    src = pathlib.Path(src).resolve()
    nb = nbformat.read(src, as_version=4)
    t0 = time.time()
    execute(nb, src.parent)
    say(f"notebook ran in {time.time() - t0:.0f} s")
    nbformat.write(nb, dst)
    errs = errors_of(nb)
    for i, name, text in errs:
        print(f"cell {i}: {name}", file=sys.stderr)
    if errs:
        raise SystemExit("error: some cells failed (see above)")


if __name__ == "__main__":
    if sys.argv[1:2] == ["prebuild"]:
        prebuild()
    elif sys.argv[1:2] == ["warm"]:
        warm()
    elif sys.argv[1:2] == ["run"] and len(sys.argv) == 4:
        run(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
