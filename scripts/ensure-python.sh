#!/usr/bin/env bash
# Create the virtual environment with a Python >= 3.11, installing python3-venv with
# apt-get when Debian/Ubuntu lacks it (as root or with passwordless sudo).
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python 3.11 or newer (apt-get install python3)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: $("$python" --version) is too old; sms-mta needs Python 3.11 or newer." >&2
    echo "       run: make PYTHON=python3.11 (or python3.12) ..." >&2
    exit 1
fi
if [ -x "$venv/bin/python" ]; then
    exit 0
fi
if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    rm -rf "$venv"
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    version=$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || sudo -n true 2>/dev/null; }; then
        echo "installing python${version}-venv with apt-get" >&2
        $sudo apt-get update -qq >&2
        $sudo apt-get install -y -qq "python${version}-venv" >&2 || $sudo apt-get install -y -qq python3-venv >&2
        "$python" -m venv "$venv"
    else
        echo "error: $python cannot create a venv; run: sudo apt-get install -y python3-venv" >&2
        exit 1
    fi
fi
