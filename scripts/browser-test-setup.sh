#!/usr/bin/env bash
# Headless Chromium for tests/report: the HTML report is checked in a real browser (scripts/test runs this).
# Does nothing when a Chromium is already installed; needs apt-get (Debian/Ubuntu) otherwise.
set -euo pipefail
for browser in chromium chromium-browser google-chrome; do
    if command -v "$browser" >/dev/null 2>&1; then exit 0; fi
done
sudo=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo"; fi
$sudo apt-get update -qq || true  # a stale mirror list should not stop an install that can still work
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium
