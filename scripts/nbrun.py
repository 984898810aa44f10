"""Runs notebooks headless with the project's Rust kernel.

    nbrun.py warm            compile the notebook's dependencies once (skipped when up to date)
    nbrun.py run IN OUT      execute notebook IN with the kernel started in IN's directory,
                             write the executed notebook to OUT, print timings

The warm-up runs the notebook's first code cell (its `:dep` lines) and one expression in a
throw-away notebook whose kernel starts in notebooks/, so that the build lands in the same
evcxr directory (notebooks/evcxr.toml, `tmpdir`) that JupyterLab's kernel uses.
"""

import hashlib
import json
import pathlib
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


def warm():
    key = warm_key()
    if STAMP.exists() and STAMP.read_text().strip() == key:
        return
    import nbformat

    settings = (NOTEBOOKS / "evcxr.toml").read_bytes()
    seen = TMPDIR / "evcxr.toml.built"
    if (TMPDIR / "target").exists() and not (seen.exists() and seen.read_bytes() == settings):
        # Cargo does not notice every change of evcxr's settings (static or dynamic linking,
        # say): start the build afresh.
        say("evcxr.toml changed: removing the old build")
        shutil.rmtree(TMPDIR / "target")
    TMPDIR.mkdir(parents=True, exist_ok=True)
    seen.write_bytes(settings)
    lock = TMPDIR / "Cargo.lock"
    if not lock.exists():
        # Start from the versions the project is tested with.
        shutil.copy(ROOT / "Cargo.lock", lock)
    say("compiling the notebook's dependencies (several minutes the first time)")
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
    say(f"dependencies compiled in {time.time() - t0:.0f} s")
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
    if sys.argv[1:2] == ["warm"]:
        warm()
    elif sys.argv[1:2] == ["run"] and len(sys.argv) == 4:
        run(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
