# Developer entry points for cnirun. The e2e tests (and so `test`) need root: use sudo.
PYTHON ?= python3
# Tests run in a shuffled order (pytest-randomly; the seed is printed at the top). Reproduce an
# order with PYTEST_FLAGS="--randomly-seed=N", or keep the file order with "-p no:randomly".
PYTEST_FLAGS ?=
PYTEST = $(PYTHON) -m pytest -p randomly $(PYTEST_FLAGS)

.PHONY: setup test unit e2e lint bench fuzz test-engines stress stress-faults

# Host packages, dockerd, the offline busybox image and an editable install of cnirun[dev].
setup:
	bash scripts/setup-host.sh

# Unit and e2e tests in one run (ends with pytest's summary line).
test:
	$(PYTEST) -m "not own_engine" tests

unit:
	$(PYTEST) tests/unit

e2e:
	$(PYTEST) tests/e2e

# The engine-matrix tests (marked `engines`) against Docker 26.x and 28.x, each a dockerd in a
# chroot cached in /var/cache/cnirun/engines (scripts/engines.sh); `test` covers the host's.
# The engines are stopped whatever happens; the status is the first failure's.
ENGINES ?= trixie sid
test-engines:
	@status=0; \
	bash scripts/engines.sh start $(ENGINES) || status=$$?; \
	if [ $$status -eq 0 ]; then \
		for suite in $(ENGINES); do \
			echo "== engine matrix: $$suite ($$(bash scripts/engines.sh host $$suite))"; \
			DOCKER_HOST=$$(bash scripts/engines.sh host $$suite) CNIRUN_TEST_ENGINE=$$suite \
				$(PYTEST) -m "engines or own_engine" tests/e2e || { rc=$$?; [ $$status -ne 0 ] || status=$$rc; }; \
		done; \
	fi; \
	bash scripts/engines.sh stop $(ENGINES) || { rc=$$?; [ $$status -ne 0 ] || status=$$rc; }; \
	exit $$status

# The property tests of tests/unit/test_fuzz.py with many more examples than `unit` runs.
FUZZ_EXAMPLES ?= 2000
fuzz:
	CNIRUN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) tests/unit/test_fuzz.py

lint:
	$(PYTHON) -m ruff check cnirun tests scripts
	$(PYTHON) -m mypy

# A report (exit 0 either way), root: run vs docker run, start-up and `net` budgets with PASS/OVER
# (README, "make bench and its budgets"). Private dirs, bridges and netns, all removed after.
bench:
	$(PYTHON) scripts/bench.py

# A bounded chaos test of sandboxes (root): STRESS_SECONDS (default 180), STRESS_ENGINES
# (DOCKER_HOST values; default the host's engine and any scripts/engines.sh runs), STRESS_REPORT;
# then the fault campaign of stress-faults. Both run; the status is the first failure's.
stress:
	@status=0; \
	$(PYTHON) scripts/stress.py || status=$$?; \
	$(MAKE) --no-print-directory stress-faults || { rc=$$?; [ $$status -ne 0 ] || status=$$rc; }; \
	exit $$status

# The fault campaign (root): signals at random delays and targeted faults (kill -9 between
# plugins, failing and hanging DELs, holders, records and state dirs damaged mid-run, gc of two
# state dirs), each followed by a leak count that must be zero. FAULT_SECONDS (default 240),
# FAULT_RUNS (cap on the signal runs), FAULT_SEED, FAULT_REPORT (JSON).
stress-faults:
	$(PYTHON) scripts/faults.py
