# The two commands of the README, each self-contained on a machine with only Python:
#   make demo   builds .venv if missing, then runs the main experiment on the embedded default
#   make test   builds .venv if missing, then runs the test suite
#   make test-unit  the tests without Ray or a trained base model (pytest -m "not slow"), in seconds
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.selftrain-installed
PIP := $(VENV)/bin/pip --disable-pip-version-check -q

.PHONY: demo test test-unit test-vllm lint bench chaos clean-runs

$(STAMP): pyproject.toml constraints.txt
	date +%s > .selftrain-setup-started
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: this CPU build lies on local disk; an unpinned torch pulls CUDA wheels
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev]"
	echo $$(( $$(date +%s) - $$(cat .selftrain-setup-started) )) > $(VENV)/.selftrain-setup-seconds
	rm -f .selftrain-setup-started
	touch $(STAMP)

# The demo's base model ships in selftrain/models/base_models (scripts/build_base_model.py rebuilds it);
# the run ends with a table of where its time went, and this line adds the set-up's.
demo: $(STAMP)
	$(VENV)/bin/selftrain compare configs/countdown_compare.yaml --overwrite
	@echo "environment set-up (make, when .venv was last built): $$(cat $(VENV)/.selftrain-setup-seconds 2>/dev/null || echo '?') s"

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q --durations=15 tests

test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

test-vllm:
	bash scripts/test_vllm.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check selftrain critics tests scripts

# SIGKILL one process of a small critique-arm run per trial, carry on, compare with an
# undisturbed run (scripts/chaos.py); not part of `make test`: ~1-2 min a trial on 2 cores
TRIALS ?= 20
chaos: $(STAMP)
	$(VENV)/bin/python scripts/chaos.py --trials $(TRIALS)

bench: $(STAMP)
	$(VENV)/bin/python scripts/benchmark.py
	$(VENV)/bin/python scripts/bench_startup.py
	$(VENV)/bin/python scripts/sandbox_bench.py
