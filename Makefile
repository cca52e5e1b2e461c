# Every command a user types. `make demo` and `make test` install what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   ?= demo-out
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-fast bench bench-scale eval-models eval-gtzan eval-ood lint clean install

install: $(STAMP)

# uv (from PyPI, into the venv) installs the same requirements as pip in a third of the
# time (43 s against 117 s on a clean clone here); pip does it where uv cannot be installed or fails. Both
# byte-compile what they install: where PYTHONDONTWRITEBYTECODE is set, as on this machine,
# Python would otherwise compile TensorFlow again in every process that imports it (18 s
# instead of 7 s), and the suite starts hundreds.
UV := $(VENV)/bin/uv pip install -q --python $(PY) --compile-bytecode

$(STAMP): pyproject.toml requirements-musicnn.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	{ $(PY) -m pip install -q uv && $(UV) -e '.[cpu,dev]' \
	    && $(UV) --no-deps --require-hashes -r requirements-musicnn.txt; } \
	|| { echo "install: uv failed, installing with pip" >&2 \
	    && $(PY) -m pip install -q -e '.[cpu,dev]' \
	    && $(PY) -m pip install -q --no-deps --require-hashes -r requirements-musicnn.txt; }
	touch $(STAMP)

# genre's own bytecode, written before a run (gitignored __pycache__ folders; only what
# changed is compiled again). Where PYTHONDONTWRITEBYTECODE is set, as on this machine,
# every process would otherwise compile the modules it imports (~0.13 s of a CPU for a
# job's), and a run starts hundreds: the job, its Ray workers, the trials.
BYTECODE := $(PY) -m compileall -q genre jobs tests

demo: $(STAMP)
	$(BYTECODE)
	$(PY) -m jobs.demo $(DEMO)

# Two processes, a test file at a time each: the suite's jobs spend much of their time
# starting processes (TensorFlow's import alone is ~6 s of a CPU), so one process leaves
# the second core idle half the time. WORKERS=0 runs it in one process.
WORKERS ?= 2
XDIST   := $(if $(filter 0,$(WORKERS)),,-n $(WORKERS) --dist loadfile --no-loadscope-reorder)

test: $(STAMP)
	$(BYTECODE)
	$(PY) -m pytest -q $(XDIST)

test-fast: $(STAMP)
	$(BYTECODE)
	$(PY) -m pytest -q $(XDIST) -m "not slow and not multinode"

bench: $(STAMP)
	$(PY) tests/bench/bench_decode.py
	$(PY) tests/bench/bench_extract.py
	$(PY) tests/bench/bench_tune.py
	$(PY) tests/bench/bench_label.py

bench-scale: $(STAMP)  # up to 40 min: a search's memory at 1×, 4×, 16× a collection
	$(PY) tests/bench/bench_tune_scale.py

eval-models: $(STAMP)
	$(PY) tests/bench/eval_models.py

eval-gtzan: $(STAMP)
	$(PY) tests/bench/eval_gtzan_mini.py --figure docs/confusion_gtzan_mini.png \
		--configs seed_cnn,short_chunk_cnn,crnn,mlp,musicnn_linear,musicnn_mlp_head,zero_shot,musicnn_linear_blend,musicnn_mlp_head_blend

eval-ood: $(STAMP)
	$(PY) tests/bench/eval_ood.py

lint: $(STAMP)
	$(PY) -m ruff check genre jobs tests
	$(PY) -m ruff format --check genre jobs tests
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(DEMO) .pytest_cache
