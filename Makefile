# sms-mta: `make demo` and `make test` work on a fresh Debian/Ubuntu machine.
# Both create .venv, install the project, and make sure RabbitMQ and Redis answer at
# MTA_AMQP_URL / MTA_REDIS_URL (starting local ones when they do not).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck constraints services bench bench-smpp bench-smpp-ingress bench-smpp-receipts chaos cluster-test deploy-tools test-deploy clean

$(STAMP): pyproject.toml
	@scripts/ensure-python.sh "$(PYTHON)" "$(VENV)"
	@echo "installing sms-mta and its dev tools into $(VENV) (log: $(VENV)/pip.log)"
	@$(PY) -m pip install --upgrade pip >$(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@$(PY) -m pip install -e '.[dev]' >>$(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)
	@touch $(STAMP)

services:
	@scripts/ensure-services.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check mta adapters tests

# adapters/ installs as mta.adapters (pyproject: package-dir); mypy sees it so via mypy-path/.
typecheck: $(STAMP)
	$(VENV)/bin/mypy -p mta -p mta.adapters

# constraints.txt: the runtime dependencies' versions installed in $(VENV), for reproducible
# installs (pip install -c constraints.txt sms-mta) and the wheel test (tests/test_packaging.py).
constraints: $(STAMP)
	$(PY) scripts/constraints.py >constraints.txt.new && mv constraints.txt.new constraints.txt

# pytest exits 5 when it collected no test; make fails on any non-zero exit, so does CI.
test: $(STAMP) services lint typecheck
	$(PY) -m pytest

demo: $(STAMP) services
	@scripts/demo.sh

# A benchmark, not a test: prints figures and fails nobody's CI.
BENCH_N ?= 200000
BENCH_B ?= 100
bench: $(STAMP) services
	$(VENV)/bin/mta bench -n $(BENCH_N) -b $(BENCH_B)

# The real SMPP path: the smpp adapter (2 binds, window 50) against a local SMSC sink that
# answers every submit_sm and returns a receipt for each (mta.smsc_sink). Figures, no verdict.
BENCH_SMPP_N ?= 200000
bench-smpp: $(STAMP) services
	$(VENV)/bin/mta bench --partner smpp -n $(BENCH_SMPP_N) -b $(BENCH_B)

# The same path fed by one SMPP client through `mta smpp-server` (window 50), every receipt
# delivered back to it as deliver_sm.
BENCH_INGRESS_N ?= 50000
bench-smpp-ingress: $(STAMP) services
	$(VENV)/bin/mta bench --partner smpp --ingress -n $(BENCH_INGRESS_N)

# deliver_sm/s from `mta smpp-server` to one bound client (window 50), min/median/max of 3
# runs, then how fast a bind drains the Redis stash. A benchmark too: figures, no verdict.
BENCH_RECEIPTS_N ?= 20000
bench-smpp-receipts: $(STAMP) services
	$(PY) tests/bench/bench_smpp_server.py --receipts -n $(BENCH_RECEIPTS_N) --runs 3

# Fault injection at a larger scale than in `make test`: private RabbitMQ and Redis killed -9
# and restarted under load, mta processes killed -9; prints what arrived per message.
FAULTS_N ?= 20000
chaos: $(STAMP) services
	FAULTS_N=$(FAULTS_N) $(PY) -m pytest tests/test_faults.py -s -q -o addopts="" --timeout 900

# The cluster tests at a larger scale than in `make test`: a 3-node RabbitMQ cluster and a Redis
# Cluster (3 masters, 1 replica each) started on loopback by the tests (tests/clusters.py), the
# pipeline on each, a RabbitMQ node and a Redis master killed -9 mid-run; prints msg/s and the
# time to recover after each kill ([cluster-test] lines) and the finals counted per message.
CLUSTER_N ?= 20000
CLUSTER_TESTS ?= tests/test_cluster_rabbit.py tests/test_cluster_redis.py tests/test_cluster_redis_failover.py
cluster-test: $(STAMP) services
	CLUSTER_N=$(CLUSTER_N) $(PY) -m pytest $(CLUSTER_TESTS) -s -q -o addopts="" -p no:cacheprovider --timeout 1800

# The deploy files, each tried for real (tests/deploy; docs/operations.md): the image built from
# deploy/Dockerfile on a local debootstrap'd Debian base, the compose stack up with a batch
# through it, systemd units (systemd-analyze verify), alert rules (promtool), Kubernetes
# manifests and the KEDA ScaledObjects (offline schemas), the Grafana dashboard's metrics
# against a live /metrics. Installs docker.io, docker-compose, debootstrap, prometheus and
# starts dockerd when missing. Takes minutes (the first run longer: debootstrap, images).
deploy-tools:
	@tests/deploy/ensure-tools.sh

test-deploy: $(STAMP) services deploy-tools
	$(PY) -m pytest tests/deploy -m "" --timeout 1800 -rA

clean:
	rm -rf $(VENV) build dist *.egg-info
