#!/usr/bin/env bash
# Creates the Python venv the `tasks` bench runs Celery from
# (target/celery-venv by default, or $1): Celery 5 with its Redis extras,
# from PyPI. Idempotent: a venv that already imports celery is kept.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="${1:-$root/target/celery-venv}"
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import celery, redis' 2>/dev/null; then
    exit 0
fi
python="${CELERY_BASE_PYTHON:-python3}"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check 'celery[redis]==5.*'
"$venv/bin/python" -c 'import celery, redis; print("celery", celery.__version__, "redis-py", redis.__version__)'
