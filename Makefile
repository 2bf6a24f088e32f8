# The README's two commands, `make demo` and `make test`, and their helpers.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is installed first and on its own: the CPU build lies on the build machines' disk, and a
# GPU host gets its CUDA build from the registry with the same pin.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test lint reliability venv clean browsers

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[api,worker,test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py --out out

test: lint browsers
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

# Formatting and lint as the tools do them (ruff's version is pinned in pyproject.toml, so
# every machine formats alike); `make test` runs this first. `.pre-commit-config.yaml` runs
# the same two commands before each commit.
lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

# The web page's tests (tests/web) drive Debian's chromium through its chromedriver, never a
# browser that a tool downloads. Installed once, with apt (root, or sudo), when either is missing.
browsers:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then exit 0; fi; \
	as_root=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	echo "installing chromium and chromium-driver with apt for tests/web"; \
	$$as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	$$as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

# The fault, load and bad-input suite at full size (CI runs it bounded, within `make test`);
# prints one table and writes it to test-artifacts/reliability/.
reliability: $(STAMP)
	HF_HUB_OFFLINE=1 REGIONFARM_RELIABILITY=full $(BIN)/python -m pytest tests/reliability -q -p no:cacheprovider
	@cat test-artifacts/reliability/table.md

clean:
	rm -rf $(VENV) out .pytest_cache
