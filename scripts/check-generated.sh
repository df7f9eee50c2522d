#!/usr/bin/env bash
# Fails when regenerating generated/ from protos/ changes anything.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r protos scripts "$scratch"/
mkdir -p "$scratch/generated"
PYTHON="$PWD/.venv/bin/python" "$scratch/scripts/gen-protos.sh"
if ! diff -r generated/osago "$scratch/generated/osago" >/dev/null; then
  echo "generated/ is stale: run 'make generate' and commit the result" >&2
  diff -r generated/osago "$scratch/generated/osago" | head -20 >&2
  exit 1
fi
echo "generated/ is up to date"
