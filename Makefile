# ganstack: `make demo` trains the main demo, `make test` runs the test suite.
# Both create .venv and install what they need first; running them again is safe.
# On a machine with a GPU, choose the torch build you want, e.g.
#   make demo TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cu124"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
RUN ?= runs/sgan-mnist
BIN := $(VENV)/bin
STAMP := $(VENV)/.ganstack-installed

.PHONY: install demo test lint clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ganstack train sgan-mnist --out $(RUN) --resume

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/python -m mypy src/

clean:
	rm -rf $(VENV) runs .pytest_cache
