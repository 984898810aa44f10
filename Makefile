# Notebook workflow. `make lab` is all a student needs.
.PHONY: setup lab test notebook-outputs

# Install what is missing (Rust kernel, JupyterLab, data) and pre-build the notebooks' kernel.
setup:
	@scripts/setup.sh

# Open JupyterLab at notebooks/01_unet.ipynb (02 and the others beside it). The data is fetched by the notebooks themselves
# when it is missing.
lab:
	@scripts/setup.sh --without-data
	@scripts/lab.sh

# Every test, the notebooks' execution included (ignored by a plain `cargo test`, as it needs the
# set-up; here it runs, and fails rather than skips without it).
test: setup
	cargo test --workspace -- --include-ignored

# Re-run the notebooks in place with the course's settings to refresh their committed outputs.
notebook-outputs: setup
	@scripts/notebook-outputs.sh
