# Two commands for a fresh machine (README "Quick start"):
#   make run    set up the generator and make a small dataset on the built-in assets, then print its summary
#   make test   set up everything (generator + [vae] + [export] + [dev]) and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out/quickstart

.PHONY: run test lint demo bench gpu-check clean

run: $(VENV)/.generator
	$(BIN)/synthcount generate $(OUT) --num-images 2000 --shard-size 500 --workers 2
	$(BIN)/synthcount inspect $(OUT)
	@echo "The synthcount command is $(BIN)/synthcount; or run 'source $(BIN)/activate' once per shell, then: synthcount --help"

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q

lint: $(VENV)/.dev
	$(BIN)/ruff check .

demo: $(VENV)/.dev
	$(BIN)/synthcount demo out/demo

bench: $(VENV)/.dev
	for b in floor generate placement load train export labels; do $(BIN)/python -m benchmarks.$$b --out out/bench-$$b.json || exit 1; done

# One-call GPU check of the paper preset (benchmarks/README.md, "gpu"); without CUDA it exits 2 with one line.
gpu-check: $(VENV)/.dev
	$(BIN)/python -m benchmarks.gpu --out out/bench-gpu.json

# The generator alone: numpy, pillow, opencv-python-headless, scikit-image, click, h5py, tqdm, PyYAML.
$(VENV)/.generator: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	touch $@

# Everything: [vae] + [export] + the test tools, with torch==2.14.1 + torchvision==0.29.1
# taken from constraints.txt (setup.cfg itself asks only for torch>=2.2).
$(VENV)/.dev: setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[vae,export,dev]'
	touch $@ $(VENV)/.generator

clean:
	rm -rf out
