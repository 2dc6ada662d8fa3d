#!/usr/bin/env bash
# The book: builds docs/ into docs/book/ with the pinned mdBook (installed
# from crates.io into ~/.cargo/bin when missing: a few minutes, once), then
# checks that no internal link of the book or README is broken and that the
# generated configuration reference is current (tests/docs_links.rs,
# tests/config_reference.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
MDBOOK_VERSION=0.5.4
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
  echo "docs: installing mdBook $MDBOOK_VERSION from crates.io (a few minutes, once)"
  cargo install mdbook --locked --version "$MDBOOK_VERSION" --no-default-features --features search
fi
mdbook build docs
cargo test --release --test docs_links --test config_reference
echo "docs: the book is in docs/book/index.html"
