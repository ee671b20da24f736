# Two commands for a fresh Debian 12 / Python 3.11 machine: `make demo` and `make test`.
# Both create or reuse .venv, install the pinned Python dependencies and the Debian packages the
# firmware stages need (only when missing), then run.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
APT_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
BOARD ?= stm32f746g-disco
PYTEST_ARGS ?=

.PHONY: demo test setup apt lint clean help

help:
	@echo "make demo   - set up everything, then run the main job on digits for $(BOARD)"
	@echo "make test   - set up everything, then run the test suite"
	@echo "make lint   - ruff"
	@echo "make clean  - remove .venv, runs/ and numba's compiled caches"

demo: setup
	$(BIN)/edgekit demo --board $(BOARD)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check edgekit firmware_bridge tests benchmarks examples

setup: apt $(STAMP)

# requirements.lock pins every package (torch==2.13.0 takes the CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build). The stamp makes a second run a no-op.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python3 -m venv failed; installing python3-venv"; $(SUDO) apt-get install -y python3-venv \
	  && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

clean:
	rm -rf $(VENV) runs .pytest_cache
	find edgekit -name '*.nbi' -delete -o -name '*.nbc' -delete
