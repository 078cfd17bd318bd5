# The two front-door commands: `make demo` and `make test`. Both set up .venv from scratch if needed.
PY ?= python3.11
# Test processes of `make test` (pytest-xdist; whole files per process, so module fixtures are built once).
TEST_WORKERS ?= 2
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test faults lint bench bench-quick mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned inside pyproject (torch==2.13.0) so the same resolve never pulls a CUDA build.
	$(BIN)/pip install --quiet -e '.[test]' 'torch==2.13.0'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/mixatlas demo --out demo-out

test: $(STAMP)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report browser test will be skipped"
	$(BIN)/ruff check src tests bench
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# The full randomized fault-injection set (kills at random moments, 10 rounds each); `make test` runs its
# fixed CI subset. MIXATLAS_FAULT_SEED=N replays a failing run.
faults: $(STAMP)
	MIXATLAS_FAULT_ROUNDS=10 $(BIN)/python -m pytest -m faults tests/faults

# Every bench program at its measured size (hours on CPU) -> bench/out/*.json; bench-quick: small sizes
# in a scratch copy (minutes) -> bench/out/quick/*.json, never overwriting measured figures.
bench: $(STAMP)
	$(BIN)/python bench/run_all.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run_all.py --quick

# Mutation score of the core modules (a bench, not a gate): mutmut in a scratch copy -> bench/out/mutation.json.
# Hours on 2 cores for every group; e.g. `.venv/bin/python bench/mutation.py --group space` for one.
mutation: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,mutation]' 'torch==2.13.0'
	$(BIN)/python bench/mutation.py

clean:
	rm -rf $(VENV) demo-out
