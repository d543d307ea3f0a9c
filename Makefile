# Contact center: build, run locally, test, deploy. See docs/local-stack.md.
#
#   make dev     run the whole system locally (emulators + Twilio simulator + gateway on 127.0.0.1:3000)
#   make down    stop the local emulators (and the simulator) started by `make dev`
#   make demo    one scripted call through the whole local system, told as a timeline
#   make bench   benchmarks (print figures): inbound webhook latency; recording offload throughput and peak memory
#   make test    every check: lint (fmt, clippy, cfn-lint, sam validate) + all tests against fresh emulators
#   make lint    only the lint checks (+ a SAM-transform cycle check of template.yaml)
#   make build   sam build (arm64 via cargo-lambda + zig)
#   make deploy  sam deploy (--guided the first time)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

CC_CACHE_DIR ?= $(HOME)/.cache/contact-center
export CC_CACHE_DIR
export PATH := $(CC_CACHE_DIR)/venv/bin:$(CC_CACHE_DIR)/cargo/bin:$(PATH)
export SAM_CLI_TELEMETRY := 0
# sam validate needs a region even offline.
export AWS_DEFAULT_REGION ?= us-east-1

CC_LOCAL := target/debug/cc-local

.PHONY: help install-tools build-local dev down test test-only lint lint-fmt lint-clippy lint-template build deploy

help:
	@sed -n '2,12p' Makefile | sed 's/^# \{0,1\}//'

install-tools:
	@scripts/install-tools.sh

# Every binary of the workspace: the four functions, cc-local, twilio-sim.
build-local:
	cargo build --workspace --bins

dev: install-tools build-local
	@scripts/dev.sh

demo: install-tools
	@scripts/with-stack.sh demo target/debug/demo

bench: install-tools
	@scripts/with-stack.sh bench sh -c 'cargo bench --profile dev -p e2e --bench inbound_latency && cargo bench --profile dev -p recording-offload --bench offload'

down:
	@if [ -x $(CC_LOCAL) ]; then $(CC_LOCAL) down; else echo "nothing to stop ($(CC_LOCAL) not built)"; fi

# `make test` = lint + tests; .ci/run runs exactly this.
test: lint test-only

test-only: install-tools
	@scripts/test.sh

# Separate targets so `make -k lint` reports every failing check.
lint: lint-fmt lint-clippy lint-template

lint-fmt:
	cargo fmt --all -- --check

lint-clippy:
	cargo clippy --workspace --all-targets -- -D warnings

lint-template: install-tools
	cfn-lint template.yaml
	sam validate --lint --template-file template.yaml
	python scripts/check-template-cycles.py template.yaml

build:
	sam build --beta-features

deploy: build
	@if grep -q '^\[default.deploy.parameters\]' samconfig.toml 2>/dev/null && grep -q '^stack_name' samconfig.toml; then \
		sam deploy; \
	else \
		sam deploy --guided; \
	fi
