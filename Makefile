# Two commands for a newcomer (see README.md):
#   make run    bootstrap, build, and run the CPU quickstart end to end
#   make test   bootstrap, build, and run every test (unit, integration, PyTorch parity)
# Both create what is missing (the .venv with PyTorch 2.13.0 = libtorch, the build).

CONFIG ?= configs/quickstart.toml
BIN := target/release/ard-pipeline

.PHONY: run test build bootstrap services bench clean-venv fmt lint

run: build
	$(BIN) --config $(CONFIG)

test: bootstrap services
	cargo test --workspace --release --no-fail-fast

build: bootstrap
	cargo build --release

bootstrap:
	@bash scripts/bootstrap.sh

# Services the tests talk to on 127.0.0.1 (promtool/prometheus from Debian).
services:
	@bash scripts/services.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets

clean-venv:
	rm -rf .venv
