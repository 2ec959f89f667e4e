PY ?= .venv/bin/python
.PHONY: test test-all soak lint fmt bench
test:  ## the default suite (CI): everything but @slow
	$(PY) -m pytest -m "not slow" -q
test-all:
	$(PY) -m pytest -q
soak:  ## the long fault-injection, fuzzing and soak tests (@slow + @soak)
	nice $(PY) -m pytest -m "soak" -q -p no:cacheprovider
lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy core api worker
fmt:
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .
bench:
	$(PY) -m bench.rd
