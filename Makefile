# The README's two set-up commands are `make demo` and `make test`.
# TORCH picks the PyTorch build: the default pin takes the CPU wheel on the project's machines;
# a CUDA user runs e.g. `make test TORCH=torch TORCH_INDEX=https://download.pytorch.org/whl/cu128`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env demo test test-slow lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(BIN)/upscale video examples/big_buck_bunny_320x180.mp4 out/big_buck_bunny_x4.mp4 --model compact --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out
