# The two commands: `make demo` runs ClickPulse on this machine, `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The browser UI's ECharts and CodeMirror (the metric editor) and the API docs' Swagger UI, from npm
# (web/package-lock.json), served by the app: no CDN, no bundler (an import map, docs/ui.md).
ECHARTS := web/node_modules/echarts/dist/echarts.min.js
NPM_CI := npm ci --prefix web --no-audit --no-fund --loglevel=error

.PHONY: demo test lint bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	$(NPM_CI) && touch $(ECHARTS)
	touch $@

# Re-installed when the lock changes or node_modules went missing (npm ci is reproducible).
$(ECHARTS): web/package-lock.json
	$(NPM_CI)
	touch $@

demo: $(BIN)/.installed $(ECHARTS)
	$(BIN)/clickpulse demo

test: $(BIN)/.installed $(ECHARTS)
	scripts/ensure-services.sh
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/compile.py
