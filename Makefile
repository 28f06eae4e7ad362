# The two entry points a fresh machine needs: `make run` and `make test`.
PY := .venv/bin/python
WORKLOAD ?= examples/workloads/hot-cold.yaml
DURATION ?= 20s
RECORD ?= /tmp/damon-k8s-recording.jsonl

.PHONY: run test check lint bootstrap system-deps

bootstrap:
	./scripts/bootstrap.sh

## Run the agent standalone on the simulated workload (no cluster needed).
run: bootstrap
	.venv/bin/damon-agent run --workload $(WORKLOAD) --duration $(DURATION) --record $(RECORD)

## Static checks: ruff, mypy --strict, import-linter layer contracts.
lint: bootstrap
	.venv/bin/ruff check agent operator tests bench
	.venv/bin/ruff format --check agent operator tests bench
	.venv/bin/mypy
	.venv/bin/lint-imports

## Everything the tests need (apt packages, control plane build, VM kernel), then lint and pytest.
test: bootstrap
	./scripts/system-deps.sh
	$(MAKE) lint
	$(PY) -m pytest

## The quick loop: lint and the tests that need no control plane, VM or image build (minutes).
check: bootstrap
	$(MAKE) lint
	$(PY) -m pytest -m "not kube and not vm and not images" -q
