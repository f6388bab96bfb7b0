# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

# The virtual environment is rebuilt only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/vistas demo

# tests/test_docker.py checks docker/compose.yaml with the distribution's docker-compose (no engine needed);
# the map page's browser tests drive Debian's Chromium (Playwright's own browser download is not used).
test: $(STAMP)
	command -v docker-compose >/dev/null || (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)
	$(BIN)/python -m pytest

# The CPU benchmarks, one figure each; bench/gpu_check.sh is the GPU machine's own script.
bench: $(STAMP)
	for script in $(filter-out bench/gpu_check.py bench/report.py bench/users_ceiling.py bench/users_data.py bench/users_eval.py bench/users_product.py,$(wildcard bench/*.py)); do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .vistas .pytest_cache test-artifacts
