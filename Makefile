# Two commands on a fresh machine: `make train` and `make test`. Each makes .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdir/tiny

.PHONY: venv train test test-fast crossdomain shapes clean

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# CPU torch and torchvision for the converters' reference tests only (never package
	# dependencies). torchvision without its dependencies: it must not replace the CPU torch.
	$(PY) -m pip install -q torch==2.13.0 || echo "torch not installed: the converter tests will be skipped"
	$(PY) -m pip install -q --no-deps torchvision==0.28.0 || echo "torchvision not installed: the detector converter test will be skipped"
	touch $@

venv: $(VENV)/.installed

train: venv
	$(PY) main.py --config=configs/tiny.py --workdir=$(WORKDIR)

test: venv
	$(PY) -m pytest -n 2 -q

# The cross-domain dual-modality system end to end on the embedded synthetic data (docs/crossdomain.md).
crossdomain: venv
	$(PY) -m dfl_jax.crossdomain --config=configs/crossdomain_tiny.py --workdir=workdir/crossdomain

# Im2Hands on DFL's keypoints end to end on the embedded synthetic data (docs/shapes.md).
shapes: venv
	$(PY) -m dfl_jax.shapes --config=configs/shapes_tiny.py --workdir=workdir/shapes

# After each change: everything but the tests marked slow (README, "Tests").
test-fast: venv
	$(PY) -m pytest -n 2 -q -m "not slow"

clean:
	rm -rf $(VENV) workdir
