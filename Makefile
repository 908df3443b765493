# chronik: `make run` and `make test` are all a new user needs (they set up .venv themselves).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: the runtime extras (all `make run` and `make demo` need) and the dev tools on top
# (pytest, mypy, ruff, playwright, schemathesis, ...: only test, lint, soak and bench need them).
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev

.PHONY: run test soak bench bench-growth lint setup clean proto demo docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(RUNTIME): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]'
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(DEV)

setup: $(DEV)

run: $(RUNTIME)  # serves ./data/events.db
	$(BIN)/python -m chronik.cli serve --config examples/shop/chronik.yaml

demo: $(RUNTIME)  # its own ./data/demo.db: never the store `make run` serves
	$(BIN)/python -m examples.shop.run

proto: $(RUNTIME)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src --grpc_python_out=src \
		--pyi_out=src proto/chronik/v1/chronik.proto

test: $(DEV)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(DEV)  # the fault drills only, ten times longer than in make test
	CHRONIK_SOAK=10 $(BIN)/python -m pytest -m drill --timeout 1800 $(PYTEST_ARGS)

bench: $(DEV)
	$(BIN)/python -m bench

bench-growth: $(DEV)  # how cost grows incl. W3 at 100k and W4 at 1M + 10M events (~9 min here)
	$(BIN)/python -m bench --only growth

lint: $(DEV)  # docs/snippets are checked, not reformatted: the docs show them as written
	$(BIN)/ruff check src tests bench examples docs/snippets
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

docs: $(DEV)  # the docs site into site/; --strict fails on a broken link or reference
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) data site .pytest_cache .mypy_cache
