#!/usr/bin/env bash
# The other Pythons the agent's tests also run under (pyenv's 3.12 and 3.13, where installed): a venv
# each, .venv-3.12 and .venv-3.13, with what the agent tests' programs import
# (tests/agent/program-requirements.txt). Made again only when that list changed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${PYENV_ROOT:-/root/.pyenv}
for minor in 3.12 3.13; do
  python=$(ls -d "$root"/versions/"$minor".*/bin/python 2>/dev/null | sort -V | tail -n1 || true)
  if [[ -z "$python" ]]; then
    echo "no Python $minor here (pyenv): the agent tests will not run under it"
    continue
  fi
  venv=.venv-$minor
  if [[ -x $venv/bin/python ]] && cmp -s tests/agent/program-requirements.txt "$venv/.requirements"; then
    continue
  fi
  "$python" -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -r tests/agent/program-requirements.txt
  cp tests/agent/program-requirements.txt "$venv/.requirements"
done
