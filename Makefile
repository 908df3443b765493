# chronik: `make run` and `make test` are all a new user needs (they set up .venv themselves).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test soak bench lint setup clean proto demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/python -m chronik.cli serve --config examples/shop/chronik.yaml

demo: $(STAMP)
	$(BIN)/python -m examples.shop.run

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=src --grpc_python_out=src \
		--pyi_out=src proto/chronik/v1/chronik.proto

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

soak: $(STAMP)  # the fault drills only, ten times longer than in make test
	CHRONIK_SOAK=10 $(BIN)/python -m pytest -m drill --timeout 1800 $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

clean:
	rm -rf $(VENV) data .pytest_cache .mypy_cache
