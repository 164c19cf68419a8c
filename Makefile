# The README's two commands: `make test` and `make demo`. Everything else is a step of those.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Every dependency (runtime, dev, transitive) pinned; the Dockerfile installs with the same file.
CONSTRAINTS := requirements/constraints.txt
# The native package's build backend (native/pyproject.toml), pinned in $(CONSTRAINTS).
MATURIN_VERSION := 1.16.0

.PHONY: help venv constraints kafka-jars tools lint typecheck test test-only demo bench chaos clean

help:
	@echo "make test   - set up everything, lint, type-check, run the whole test suite"
	@echo "make demo   - start Kafka and the sandbox, produce sample events, run the consumer"
	@echo "make bench  - run the benchmarks and rewrite BENCHMARKS.md"
	@echo "make chaos  - run the chaos harness at full size"

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

# The transform's optional native fast path (native/, Rust through PyO3 and maturin; the
# crates are fetched by cargo at build time, Cargo.lock pins them). Rebuilt when its
# sources change. Without a Rust toolchain the transform runs the Python reference
# (transform.engine = "auto" logs that once).
NATIVE_STAMP := $(VENV)/.native-stamp
CARGO_PATH := $(HOME)/.cargo/bin
$(NATIVE_STAMP): $(STAMP) native/pyproject.toml native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	@if PATH="$(CARGO_PATH):$$PATH" command -v cargo >/dev/null; then \
	  PATH="$(CARGO_PATH):$$PATH" $(BIN)/pip install -q -c $(CONSTRAINTS) --build-constraint $(CONSTRAINTS) ./native; \
	else \
	  echo "make venv: no Rust toolchain (cargo), xconv-native not built: the transform runs the Python reference"; \
	fi
	touch $(NATIVE_STAMP)

venv: $(STAMP) $(NATIVE_STAMP)

# Re-pin after changing dependencies in pyproject.toml: a fresh venv resolves them anew
# (the build backend too: --build-constraint pins it in pip's isolated build environment).
constraints:
	rm -rf build/constraints-venv
	$(PYTHON) -m venv build/constraints-venv
	build/constraints-venv/bin/pip install -q -e '.[dev]'
	build/constraints-venv/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" \
	  | xargs build/constraints-venv/bin/pip install -q
	{ echo "# Pinned dependencies of xconv (runtime, dev and build backend). Regenerate: make constraints"; \
	  build/constraints-venv/bin/pip freeze --exclude-editable; } > $(CONSTRAINTS)
	grep -q '^maturin==' $(CONSTRAINTS) || echo 'maturin==$(MATURIN_VERSION)' >> $(CONSTRAINTS)
	rm -rf build/constraints-venv

kafka-jars: venv
	$(BIN)/python -m devtools.kafka fetch

tools:
	bash devtools/install_tools.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

test-only: venv
	$(BIN)/pytest

test: venv kafka-jars tools lint typecheck test-only

demo: venv kafka-jars
	$(BIN)/python -m devtools.demo

bench: venv kafka-jars
	$(BIN)/python -m bench.run_all

chaos: venv kafka-jars
	$(BIN)/python -m bench.chaos

clean:
	rm -rf .run build dist .pytest_cache .mypy_cache .ruff_cache
