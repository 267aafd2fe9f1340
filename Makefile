# One entry point for users and CI. `make app` sets everything up and launches the
# dashboard on the built-in defaults; `make test` sets everything up and runs the suite.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/cache/numba
export MPLCONFIGDIR ?= $(CURDIR)/cache/mpl

# Debian packages the app and tests use: the browser for browser tests, real datasets.
DEB_PKGS := chromium dataset-fashion-mnist hershey-fonts-data

.PHONY: app test install system-deps clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/python -m engine warm
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

# The dashboard is served at once; the default builds run behind it as background jobs (one runner,
# progress on every page, `geolens jobs list`). The runner exits 10 min after its queue empties.
app: $(STAMP) system-deps
	$(BIN)/python -m engine.core.jobs run --background --submit-defaults --idle-exit 600
	$(BIN)/streamlit run app.py

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
