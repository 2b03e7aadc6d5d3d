# Two commands on a fresh Debian/Ubuntu machine: `make run` and `make test`.
# Both create .venv and, when run as root, install the Debian packages they need.
# Options of the stack go in ARGS: make run ARGS='--gpu-simulate 2 --slack-webhook-url-file F'
# (scripts/run_stack.py --help lists them); `make demo` adds an incident that reaches Slack.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
APT_PACKAGES := prometheus prometheus-alertmanager prometheus-node-exporter victoria-metrics chromium
APT_BINARIES := prometheus promtool prometheus-alertmanager amtool prometheus-node-exporter victoria-metrics chromium

.PHONY: setup apt venv run demo test lint clean

setup: apt venv

apt:
	@missing=""; for b in $(APT_BINARIES); do command -v $$b >/dev/null || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages: $(APT_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	  else \
	    echo "missing:$$missing -- run: sudo apt-get install -y $(APT_PACKAGES)"; exit 1; \
	  fi; \
	fi

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "python3 is required"; exit 1; }
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; \
	  else echo "run: sudo apt-get install -y python3-venv"; exit 1; fi; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[sidecar,remediator,dev]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/python scripts/run_stack.py $(ARGS)

demo: setup
	$(VENV)/bin/python scripts/run_stack.py --demo $(ARGS)

lint: venv
	$(VENV)/bin/ruff check .

test: setup lint
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
