# Entry points: `make demo` (an example sweep on this machine), `make test-unit` (every test that needs no
# cluster, and no root) and `make test` (the whole suite against a real single-node Slurm that
# `slurmml cluster up` installs and starts).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch for the example app, whose CPU build is enough. The pin alone gets that build only where pip is set up to
# find it: on the machine this project is developed on, pip's config (`pip config list`: find-links) names a local
# folder holding the 2.13.0+cpu wheel. Elsewhere PyPI gives Linux the multi-GB CUDA build; set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to take the CPU build from PyTorch's index instead.
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
DEMO_SWEEP ?= seed=1,2,3 model=mlp,linear

.PHONY: install demo cluster test test-unit soak bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url "$(TORCH_INDEX)")
	$(PY) -m pip install --quiet -e ".[examples,s3,test]"
	touch $@

demo: install
	cd examples && ../$(PY) train.py -m $(DEMO_SWEEP)
	@echo "Each run's outputs (config, log, .hydra/) are under examples/multirun/<date>/<time>/<job number>/"
	$(VENV)/bin/slurmml runs --sort -val_acc --limit 6

cluster: install
	$(VENV)/bin/slurmml cluster up

test: install cluster
	SLURMML_REQUIRE_SLURM=$${SLURMML_REQUIRE_SLURM:-1} $(PY) -m pytest -p no:cacheprovider -rs

# Everything not marked `slurm`: tests/unit, the local Hydra suites, the TUI pilot and snapshot tests.
test-unit: install
	SLURMML_REQUIRE_SLURM=0 $(PY) -m pytest -p no:cacheprovider -rs -m "not slurm"

# The real-Slurm suites N times in a row (default 3): a test that fails in any round is a race to find.
N ?= 3
soak: install cluster
	@failed=0; for round in $$(seq 1 $(N)); do \
	  echo "== soak round $$round of $(N)"; \
	  SLURMML_REQUIRE_SLURM=1 $(PY) -m pytest -p no:cacheprovider -q -m slurm -rfE || failed=$$((failed + 1)); \
	done; echo "soak: $$failed of $(N) round(s) failed"; test $$failed -eq 0

bench: install cluster
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) benchmarks/bench_submit.py
	$(PY) benchmarks/bench_registry.py
	$(PY) benchmarks/bench_tui.py
	$(PY) benchmarks/bench_early_stop.py

clean:
	rm -rf $(VENV) examples/multirun examples/outputs
