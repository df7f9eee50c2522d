#!/usr/bin/env bash
# Fails when rebuilding the browser client changes the committed web/src/gen/ or
# web_bridge/static/app.js. Builds in a scratch copy of the sources: the work tree is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/web" "$scratch/web_bridge/static"
cp -r protos scripts examples "$scratch"/
cp web/package.json web/package-lock.json web/tsconfig.json "$scratch/web/"
cp -r web/src "$scratch/web/"
rm -rf "$scratch/web/src/gen"
# Reuse installed packages when they match the lock file; build-web.sh runs `npm ci` otherwise.
if cmp -s web/package-lock.json web/node_modules/.installed-from-package-lock.json 2>/dev/null; then
  cp -a web/node_modules "$scratch/web/"
fi

PYTHON="$ROOT/.venv/bin/python" "$scratch/scripts/build-web.sh" >/dev/null

status=0
if ! diff -r web/src/gen "$scratch/web/src/gen" >/dev/null; then
  echo "web/src/gen is stale: run scripts/build-web.sh and commit the result" >&2
  diff -r web/src/gen "$scratch/web/src/gen" | head -20 >&2
  status=1
fi
if ! cmp -s web_bridge/static/app.js "$scratch/web_bridge/static/app.js"; then
  echo "web_bridge/static/app.js is stale: run scripts/build-web.sh and commit the result" >&2
  status=1
fi
if [ "$status" -eq 0 ]; then
  echo "web/src/gen and web_bridge/static/app.js are up to date"
fi
exit "$status"
