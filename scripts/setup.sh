#!/usr/bin/env bash
# Set up a fresh machine: a virtual environment in .venv with the package, its pinned dependencies and the
# test tools, plus (when run as root on Debian) the DICOM tools that the outside-check tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test,dicom-seg,tensorboard]"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if ! command -v dcm2niix >/dev/null || ! command -v dciodvfy >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcm2niix dicom3tools) >/dev/null
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import anomalyclip_med, torch; print("anomalyclip_med", anomalyclip_med.__version__, "torch", torch.__version__)')"
