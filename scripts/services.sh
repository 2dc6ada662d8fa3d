#!/usr/bin/env bash
# Installs the programs the integration tests start on 127.0.0.1 when they are
# missing: Prometheus and promtool (Debian package `prometheus`). Needs root (or
# sudo) on Debian/Ubuntu; elsewhere install them by hand.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo "==> installing prometheus + promtool (Debian package prometheus)"
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
  echo "error: promtool/prometheus missing and no root to install them (apt-get install prometheus)" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package starts a system service on :9090 where systemd exists; the tests start their own.
command -v promtool >/dev/null
