#!/usr/bin/env bash
# One-command set-up for a checkout (README "Install"): CPU torch first, then the package with its
# test extras, then Debian's Chromium for the leaderboard page test when apt-get is available.
set -euo pipefail
cd "$(dirname "$0")"
# The CPU build of torch, before anything can pull a multi-GB CUDA build as a dependency.
python -m pip install "torch==2.13.0"
python -m pip install -e ".[test]"
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
