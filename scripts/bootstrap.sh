#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with pinned dependencies.
# The broker (noida-db, from PyPI) and Redis are started by the project's own code when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: error: Python 3.11+ not found" >&2; exit 1; }

stamp=.venv/.bootstrap-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then exit 0; fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -r requirements.lock 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import faust, confluent_kafka, fastavro, redis, prometheus_client, noida_db, torch, transformers, detoxify, presidio_analyzer, presidio_anonymizer, profanity_check, datasketch, playwright.sync_api" \
  || { echo "bootstrap: error: dependencies did not install" >&2; exit 1; }
# Debian packages some tests drive: Chromium for the review page's browser tests (a test tool's own
# browser download fails offline), Prometheus for promtool and a real server scraping a worker
debian_package() {  # COMMAND PACKAGE WHAT [APT OPTIONS]
  command -v "$1" >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing Debian's $2 for $3"
    (apt-get install -y -q ${4:-} "$2" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q ${4:-} "$2" >/dev/null 2>&1; }) \
      || echo "bootstrap: warning: $2 did not install; $3 will be skipped" >&2
  else
    echo "bootstrap: warning: no $2 and no root to install it; $3 will be skipped" >&2
  fi
}
debian_package chromium chromium "the browser tests"
debian_package promtool prometheus "the alert-rule and scrape tests" --no-install-recommends
rm -f .venv/.bootstrap-*
touch "$stamp"
echo "bootstrap: .venv ready"
