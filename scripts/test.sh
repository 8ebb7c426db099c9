#!/usr/bin/env bash
# Set up (idempotent) and run every test, GUI tests included, on a virtual display.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests bench scripts
export QT_QPA_PLATFORM=xcb
if [ -z "${DISPLAY:-}" ] && command -v xvfb-run >/dev/null; then
  exec xvfb-run -a -s "-screen 0 1600x1000x24" python -m pytest -p no:cacheprovider "$@"
fi
exec python -m pytest -p no:cacheprovider "$@"
