#!/usr/bin/env bash
# Create the project's virtualenv (.venv, Python 3.12) and install damon-k8s with its dev tools.
# Idempotent: a second run only re-installs the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
    for candidate in python3.12 "$HOME/.pyenv/versions/3.12"*/bin/python3.12 /usr/bin/python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    echo "bootstrap: Python 3.12 or newer is required (Helm's engine, helm-sdkpy, needs it)" >&2
    return 1
}

if [ ! -x .venv/bin/python ]; then
    py=$(find_python)
    echo "bootstrap: creating .venv with $py"
    "$py" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
# The lock constrains the runtime closure, so the tests run on exactly the versions the image
# installs (a newer release on the index would otherwise slip into .venv and not into the image).
.venv/bin/python -m pip install --quiet --constraint requirements.lock -e '.[dev]' > .venv/bootstrap.log 2>&1 || {
    cat .venv/bootstrap.log >&2
    echo "bootstrap: pip install failed (log above)" >&2
    exit 1
}
echo "bootstrap: ready ($(.venv/bin/python --version))"
