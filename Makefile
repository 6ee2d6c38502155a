# Two commands on a fresh machine: `make run` and `make test`. Every target is idempotent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
IDNODE := $(VENV)/bin/idnode
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-data
DEMO_COUNT ?= 100000
WORKERS ?= 2
HTTP_PORT ?= 8000

.PHONY: venv run demo test lint bench-micro bench-scale clean

venv: $(STAMP)

# setup.py and the C sources too: a changed extension (resolver/server/_mmsg.c, _plain.c) is compiled again.
$(STAMP): pyproject.toml setup.py resolver/server/_mmsg.c resolver/server/_plain.c resolver/server/_plain.h
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The demo store is built once; delete $(DEMO_DIR) to build it again.
$(DEMO_DIR)/.built: | $(STAMP)
	rm -rf $(DEMO_DIR)
	$(IDNODE) gen --count $(DEMO_COUNT) --seed 1 > $(DEMO_DIR).ndjson.tmp
	$(IDNODE) load --data $(DEMO_DIR) $(DEMO_DIR).ndjson.tmp
	rm -f $(DEMO_DIR).ndjson.tmp
	touch $@

# The two application scenarios (deploy/scenarios/): prefixes, templates and data, loaded with template checks.
$(DEMO_DIR)/.scenarios: $(DEMO_DIR)/.built $(wildcard deploy/scenarios/*/*)
	$(IDNODE) scenario load --data $(DEMO_DIR) deploy/scenarios/automotive deploy/scenarios/equipment
	touch $@

demo: $(DEMO_DIR)/.built $(DEMO_DIR)/.scenarios

run: demo
	$(IDNODE) serve --data $(DEMO_DIR) --bind 127.0.0.1 --workers $(WORKERS) --http-port $(HTTP_PORT)

# The micro-benchmarks run once as plain tests (benchmarking disabled) so that they cannot rot. -rs lists every
# skipped test with its reason (an external program not installed: README, Tests).
test: venv
	$(PY) -m pytest -q -rs tests bench/test_micro.py bench/test_pages.py bench/test_console.py

lint: venv
	$(VENV)/bin/ruff check resolver storage bench tests

bench-micro: venv
	$(PY) -m pytest bench/test_micro.py --benchmark-enable --benchmark-autosave --benchmark-storage=bench/results/micro -q
	$(PY) -m bench.micro

# Page render time on the demo store (100k generated + both scenarios): resolve, chain, templates, HTML; and a
# whole GET through the aiohttp app. Figures recorded in bench/results/pages.md (target: under 20 ms a page).
.PHONY: bench-pages
bench-pages: venv
	$(PY) -m pytest bench/test_pages.py --benchmark-enable --benchmark-columns=min,median,mean,max,rounds -q

# The acceptance volume (not part of `make test`): 20M identifiers loaded, 5M resolutions, a restart, the report;
# results in bench/results/scale.{json,md,png} (the PNG needs matplotlib, the `bench` extra, installed here).
# Needs about 20 GB of disk under SCALE_DIR and 4 GB of free memory; checked before it starts.
SCALE_DIR ?= /var/tmp/idnode-scale
bench-scale: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.scale --workdir $(SCALE_DIR)

# DNS side by side on one core (not part of `make test`): idnode's DNS view, NSD, Knot, a minimal Python server,
# and idnode's Handle UDP; results in bench/results/compare.{json,md,png}. Needs, as root:
# apt-get install -y nsd knot knot-dnsutils dnsperf (the script says so when they are missing). About 5 minutes.
.PHONY: bench-compare
COMPARE_ARGS ?=
bench-compare: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.compare $(COMPARE_ARGS)

# Every protocol of `idnode bench` against one worker (not part of `make test`): Handle UDP, Handle TCP, the DNS
# view (its memo on, and off with --dns-memo-mb 0), HTTP; server on CPU 0, generator on CPU 1, 3 rounds of 10 s
# each after waiting for a quiet machine. Store built once in /var/tmp/idnode-protocols. Results in
# bench/results/protocols.{json,md,png} and the median rounds as loadgen-<protocol>.{json,md,png}. About 5 minutes.
.PHONY: bench-protocols
PROTOCOLS_ARGS ?=
bench-protocols: venv
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(PY) -m bench.protocols $(PROTOCOLS_ARGS)

# Coverage-guided fuzzing with atheris (not part of `make test`; see tests/fuzz/README.md): each harness of
# tests/fuzz/ runs FUZZ_SECONDS from its seed corpus. New inputs go to build/fuzz/corpus/HARNESS, a crashing
# input to build/fuzz/HARNESS-crash-*, the log to build/fuzz/HARNESS.log. Stops at the first finding.
FUZZ_SECONDS ?= 120
FUZZ_HARNESSES := handle dns http_json
.PHONY: fuzz
fuzz: venv
	$(PY) -m pip install --quiet 'atheris>=2.3'
	@mkdir -p build/fuzz
	@set -e; for h in $(FUZZ_HARNESSES); do \
		mkdir -p build/fuzz/corpus/$$h; \
		echo "fuzz $$h for $(FUZZ_SECONDS) s"; \
		$(PY) -m tests.fuzz.fuzz_$$h -max_total_time=$(FUZZ_SECONDS) -timeout=10 -artifact_prefix=build/fuzz/$$h- \
			build/fuzz/corpus/$$h tests/fuzz/corpus/$$h > build/fuzz/$$h.log 2>&1 || { tail -60 build/fuzz/$$h.log; exit 1; }; \
		grep -E "^(Done|#[0-9]+ *DONE)" build/fuzz/$$h.log; \
	done

# Screenshots of the pages (not part of `make test`): the browser tests' demo node in headless chromium, every
# page at 390x844 and 1280x900, in Chinese and English, into bench/results/pages/ (README.md indexes them).
# Needs, as root: apt-get install -y chromium chromium-driver fonts-wqy-microhei (.ci/run installs them).
.PHONY: screenshots
screenshots: venv
	$(PY) -m bench.screenshots

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
