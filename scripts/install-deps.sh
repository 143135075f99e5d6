#!/usr/bin/env bash
# Installs the Debian packages Portico needs, if any is missing: apt-get as root, sudo otherwise.
# Usage: scripts/install-deps.sh [extra packages...]
set -euo pipefail

packages=(pkg-config libhiredis-dev redis-server curl openssl iproute2 "$@")
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if ! command -v swift >/dev/null 2>&1; then
    echo "error: swift is not on PATH. Install Swift 6 (https://www.swift.org/install/) and retry." >&2
    exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "installing missing packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
    apt_get=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    apt_get=(sudo apt-get)
else
    echo "error: missing packages: ${missing[*]}" >&2
    echo "       run as root, or give this user sudo, or install them yourself:" >&2
    echo "       sudo apt-get install -y ${missing[*]}" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${apt_get[@]}" update -qq
"${apt_get[@]}" install -y -qq --no-install-recommends "${missing[@]}"
