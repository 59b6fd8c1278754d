# Two entry points: `make demo` (an example sweep on this machine) and `make test` (the whole suite
# against a real single-node Slurm that `slurmml cluster up` installs and starts).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch for the example app (a plain `torch` requirement pulls the multi-GB CUDA build).
TORCH ?= torch==2.13.0
DEMO_SWEEP ?= seed=1,2,3 model=mlp,linear

.PHONY: install demo cluster test soak bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[examples,test]"
	touch $@

demo: install
	cd examples && ../$(PY) train.py -m $(DEMO_SWEEP)
	@echo "Each run's outputs (config, log, .hydra/) are under examples/multirun/<date>/<time>/<job number>/"
	$(VENV)/bin/slurmml runs --sort -val_acc --limit 6

cluster: install
	$(VENV)/bin/slurmml cluster up

test: install cluster
	SLURMML_REQUIRE_SLURM=$${SLURMML_REQUIRE_SLURM:-1} $(PY) -m pytest -p no:cacheprovider -rs

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

clean:
	rm -rf $(VENV) examples/multirun examples/outputs
