PY ?= .venv/bin/python
.PHONY: test test-all lint fmt bench
test:  ## the default suite (CI): everything but @slow
	$(PY) -m pytest -m "not slow" -q
test-all:
	$(PY) -m pytest -q
lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
fmt:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .
bench:
	$(PY) -m bench.rd
