#!/usr/bin/env bash
# One-time set-up on a fresh machine (idempotent): system libraries for the GUI tests,
# a virtual environment in .venv with the CPU build of torch and napari-unet installed.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v xvfb-run >/dev/null || need_apt+=(xvfb xauth)
[ -e /usr/lib/x86_64-linux-gnu/libEGL.so.1 ] || [ -e /usr/lib/aarch64-linux-gnu/libEGL.so.1 ] || need_apt+=(libegl1)
ldconfig -p 2>/dev/null | grep -q libxkbcommon-x11 || need_apt+=(libxkbcommon-x11-0)
ldconfig -p 2>/dev/null | grep -q libxcb-cursor || need_apt+=(libxcb-cursor0)
command -v chromium >/dev/null || need_apt+=(chromium)  # the QC page test opens it headless
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages (virtual display, Qt, headless browser)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${need_apt[@]}" libgl1-mesa-dri libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 \
      libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 \
      libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 libfontconfig1 \
      libglib2.0-0 >/dev/null
  else
    echo "setup: missing system packages (${need_apt[*]}); GUI and browser tests need them" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
pip_q() { python -m pip install -q --disable-pip-version-check "$@"; }
python -c "import torch" 2>/dev/null || pip_q "torch==2.13.0"
stamp=.venv/.napari-unet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip_q -e ".[test]"
  touch "$stamp"
fi
