#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the package, its pinned dependencies and the
# test tools, plus (when run as root on Debian) the DICOM tools that the outside-check tests use.
# One line per step; a failing step prints its whole output and stops the script with its exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# seconds to wait for another apt/dpkg process (unattended-upgrades, cloud-init) to release its lock
APT_LOCK_TIMEOUT=${APT_LOCK_TIMEOUT:-600}

step() {
  local name=$1 log status=0
  shift
  log=$(mktemp)
  printf '%s ... ' "$name"
  "$@" >"$log" 2>&1 || status=$?
  if [ "$status" = 0 ]; then
    echo ok
  else
    echo "FAILED (exit $status):"
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" "$@"
}

# `apt-get update` takes the package-lists lock, which DPkg::Lock::Timeout does not cover (apt 2.6 still fails at
# once with exit 100 there): retry while another process holds it, up to the same timeout.
apt_update() {
  local waited=0 out
  until out=$(apt_get update -qq 2>&1); do
    if ! grep -q "Could not get lock" <<<"$out" || [ "$waited" -ge "$APT_LOCK_TIMEOUT" ]; then
      echo "$out"
      return 100
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

[ -x .venv/bin/python ] || step "virtual environment .venv" "$PY" -m venv .venv
step "pip upgrade" .venv/bin/python -m pip install -q --upgrade pip
step "anomalyclip_med and its pinned dependencies" \
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,dicom-seg,tensorboard]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v dcm2niix >/dev/null || ! command -v dciodvfy >/dev/null; then
    step "apt package lists (waits up to ${APT_LOCK_TIMEOUT}s for the apt lock)" apt_update
    step "DICOM tools dcm2niix, dicom3tools" apt_get install -y -qq dcm2niix dicom3tools
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import anomalyclip_med, torch; print("anomalyclip_med", anomalyclip_med.__version__, "torch", torch.__version__)')"
