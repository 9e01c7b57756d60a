# Developer entry points for cnirun. The e2e tests (and so `test`) need root: use sudo.
PYTHON ?= python3

.PHONY: setup test unit e2e lint bench

# Host packages, dockerd, the offline busybox image and an editable install of cnirun[dev].
setup:
	bash scripts/setup-host.sh

# Unit and e2e tests in one run (ends with pytest's summary line).
test:
	$(PYTHON) -m pytest tests

unit:
	$(PYTHON) -m pytest tests/unit

e2e:
	$(PYTHON) -m pytest tests/e2e

lint:
	$(PYTHON) -m ruff check cnirun tests scripts
	$(PYTHON) -m mypy

bench:
	$(PYTHON) scripts/bench.py
