# Two commands for a newcomer (see README.md):
#   make run    bootstrap, build, and run the CPU quickstart end to end
#   make test   bootstrap, build, and run every test (unit, integration, PyTorch parity)
# Both create what is missing (the .venv with PyTorch 2.13.0 = libtorch, the build).
# `make docs` builds the book (docs/) and checks its links.

CONFIG ?= configs/quickstart.toml
# Extra arguments of `make run`, e.g. ARGS=--fresh to train a finished run again.
ARGS ?=
BIN := target/release/ard-pipeline

.PHONY: run test test-data build bootstrap services bench docs clean-venv fmt lint

run: build
	$(BIN) --config $(CONFIG) $(ARGS)

test: bootstrap services test-data
	cargo test --workspace --release --no-fail-fast

# The CIFAR-10 copy the tests read (tests/common/mod.rs, cifar_root): $ARD_TEST_DATA,
# else ../shared/data/cifar-10-batches-bin when present, else the clone's
# data/cifar-10-batches-bin, downloaded here when absent (md5-checked; offline,
# one line saying where to put the files).
test-data: build
	@if [ -z "$$ARD_TEST_DATA" ] && [ ! -d ../shared/data/cifar-10-batches-bin ]; then \
		$(BIN) data fetch --root data/cifar-10-batches-bin; \
	fi

build: bootstrap
	cargo build --release

bootstrap:
	@bash scripts/bootstrap.sh

# Services the tests talk to on 127.0.0.1 (promtool/prometheus from Debian).
services:
	@bash scripts/services.sh

# Training throughput on this machine, side by side: the PyTorch reference
# loop, the pipeline and the sequential trainer, with the pipeline's per-stage
# breakdown (docs/src/performance.md); writes runs/bench.json. The default plan
# (WRN-16-4 and WRN-34-10 teachers, 1 and 10 steps, online and cached soft
# labels, 2 batches of 128 each) takes about an hour on 2 cores; narrow it with
# e.g. BENCH_ARGS="--teachers wrn16_4 --steps 1 --soft-labels cached".
BENCH_ARGS ?=
bench: build
	@mkdir -p runs
	$(BIN) --log-level warn bench --json runs/bench.json $(BENCH_ARGS)

# The book under docs/ (mdBook, pinned and installed by the script when
# missing) into docs/book/, with its internal links and the generated
# configuration reference checked.
docs: bootstrap
	@bash scripts/docs.sh

fmt:
	cargo fmt --all

# Formatting, and clippy with every warning an error (function size limits in
# clippy.toml). --release reuses the release build's build scripts.
lint: bootstrap
	cargo fmt --all -- --check
	cargo clippy --release --workspace --all-targets -- -D warnings

clean-venv:
	rm -rf .venv
