# One entry point for users and CI. `make app` sets everything up and launches the
# dashboard on the built-in defaults; `make test` sets everything up and runs the suite.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export NUMBA_CACHE_DIR ?= $(CURDIR)/cache/numba
export MPLCONFIGDIR ?= $(CURDIR)/cache/mpl

.PHONY: app test install chromium clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

app: $(STAMP)
	$(BIN)/geolens build-defaults
	$(BIN)/streamlit run app.py --server.headless true

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV)
