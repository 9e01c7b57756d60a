# Developer entry points for cnirun. The e2e tests (and so `test`) need root: use sudo.
PYTHON ?= python3
# Tests run in a shuffled order (pytest-randomly; the seed is printed at the top). Reproduce an
# order with PYTEST_FLAGS="--randomly-seed=N", or keep the file order with "-p no:randomly".
PYTEST_FLAGS ?=
PYTEST = $(PYTHON) -m pytest -p randomly $(PYTEST_FLAGS)

.PHONY: setup test unit e2e lint bench fuzz stress

# Host packages, dockerd, the offline busybox image and an editable install of cnirun[dev].
setup:
	bash scripts/setup-host.sh

# Unit and e2e tests in one run (ends with pytest's summary line).
test:
	$(PYTEST) tests

unit:
	$(PYTEST) tests/unit

e2e:
	$(PYTEST) tests/e2e

# The property tests of tests/unit/test_fuzz.py with many more examples than `unit` runs.
FUZZ_EXAMPLES ?= 2000
fuzz:
	CNIRUN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) tests/unit/test_fuzz.py

lint:
	$(PYTHON) -m ruff check cnirun tests scripts
	$(PYTHON) -m mypy

bench:
	$(PYTHON) scripts/bench.py

# A bounded chaos test of sandboxes (root): STRESS_SECONDS (default 180), STRESS_ENGINES
# (DOCKER_HOST values; default the host's engine and any scripts/engines.sh runs), STRESS_REPORT.
stress:
	$(PYTHON) scripts/stress.py
