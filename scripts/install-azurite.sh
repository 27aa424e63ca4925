#!/usr/bin/env bash
# install-azurite.sh installs a pinned Azurite (the Azure Storage emulator)
# into <repo>/.cache/azurite for the Azure Blob tests. It is idempotent: it
# does nothing when the pinned version is already there. No global install.
#
# Usage: scripts/install-azurite.sh      (AZURITE_VERSION overrides the pin)
set -euo pipefail

version="${AZURITE_VERSION:-3.37.0}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="$repo/.cache/azurite"
bin="$prefix/node_modules/.bin/azurite-blob"
pkg="$prefix/node_modules/azurite/package.json"

if [[ -x "$bin" && -f "$pkg" ]] && grep -q "\"version\": \"$version\"" "$pkg"; then
	exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
	echo "install-azurite: npm not found; install Node.js (apt-get install nodejs npm)" >&2
	exit 1
fi

mkdir -p "$prefix"
# A package.json of our own keeps npm from walking up to some other project.
[[ -f "$prefix/package.json" ]] || echo '{"private": true}' >"$prefix/package.json"
npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error \
	--save-exact "azurite@$version" >/dev/null
if [[ ! -x "$bin" ]]; then
	echo "install-azurite: $bin missing after npm install" >&2
	exit 1
fi
echo "install-azurite: azurite $version installed in $prefix"
