# tal — the two set-up commands: `make run` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
# torch/torchvision pinned to the build this machine keeps on disk (no multi-GB download)
TORCH   ?= torch==2.14.1 torchvision==0.29.1
STAMP   := $(VENV)/.installed
EXP     ?= actionformer_synthetic
ARGS    ?=

.PHONY: install run test test-slow test-all lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev,video]'
	touch $(STAMP)

install: $(STAMP)

## run the default experiment end to end on the synthetic data (generated on first use)
run: $(STAMP)
	$(PY) -m tal.run experiment=$(EXP) $(ARGS)

## the fast test suite (< 10 minutes on 2 CPU cores)
test: $(STAMP)
	$(PY) -m pytest -q

## the long tests (marked `slow`)
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

## speed/memory benchmarks (ratios against references measured in the same run)
bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf outputs .pytest_cache
