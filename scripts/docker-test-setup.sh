#!/usr/bin/env bash
# A Docker engine and a Python image for tests/docker, on a machine where no registry is reachable.
#
#   source scripts/docker-test-setup.sh   # exports SELFOPT_TRACE_TEST_IMAGE (what scripts/test does)
#   bash scripts/docker-test-setup.sh     # prints the image name
#
# Runs ../shared/docker/engine.sh (installs and starts dockerd, no bridge network) and
# ../shared/docker/python-image.sh (builds a local Python image) when they are present, and installs
# docker-compose (to validate docker/compose.yaml). Returns non-zero, exporting nothing, when no
# engine can be had: the Docker tests then skip, saying why. Safe to source under `set -eu`.

_selfopt_docker_test_setup() {
  local root shared image
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  shared=${SELFOPT_SHARED_DIR:-$root/../shared}
  if [[ -f "$shared/docker/engine.sh" ]]; then
    bash "$shared/docker/engine.sh" >/dev/null || { echo "docker-test-setup: engine.sh failed" >&2; return 1; }
  fi
  docker info >/dev/null 2>&1 || { echo "docker-test-setup: no Docker engine answers" >&2; return 1; }
  if ! command -v docker-compose >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose; } >/dev/null 2>&1 || true
  fi
  image=${SELFOPT_TRACE_TEST_IMAGE:-}
  if [[ -z "$image" && -f "$shared/docker/python-image.sh" ]]; then
    image=$(bash "$shared/docker/python-image.sh") || { echo "docker-test-setup: python-image.sh failed" >&2; return 1; }
  fi
  [[ -n "$image" ]] || { echo "docker-test-setup: no image (set SELFOPT_TRACE_TEST_IMAGE)" >&2; return 1; }
  export SELFOPT_TRACE_TEST_IMAGE=$image
  echo "$image"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  _selfopt_docker_test_setup
else
  _selfopt_docker_test_setup >/dev/null
fi
