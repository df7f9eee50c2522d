#!/usr/bin/env bash
# Builds the browser client: regenerates web/src/gen/ from protos/ (protoc-gen-es, run by the
# Python protoc), type-checks web/src/, and bundles web/src/main.ts with esbuild into
# web_bridge/static/app.js. The output depends only on the sources and the pinned versions in
# web/package-lock.json (no timestamps, no absolute paths, fixed flags), so rebuilding an unchanged
# tree gives the same bytes; scripts/check-web.sh relies on it.
#
# Needs Node.js >= 20 and npm; installs web/node_modules with `npm ci` when it is missing or was
# installed from another package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-$ROOT/.venv/bin/python}

command -v node >/dev/null && command -v npm >/dev/null || {
  echo "build-web: Node.js (>= 20) and npm are required" >&2
  exit 1
}

# web/node_modules, installed exactly from the lock file.
stamp=web/node_modules/.installed-from-package-lock.json
if ! cmp -s web/package-lock.json "$stamp" 2>/dev/null; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  cp web/package-lock.json "$stamp"
fi

# google/rpc/error_details.proto (google.rpc.BadRequest, the INVALID_ARGUMENT details) ships with
# the pinned googleapis-common-protos wheel; google/protobuf/* with grpcio-tools.
googleapis=$("$PY" -c 'import google.rpc, os; print(os.path.dirname(os.path.dirname(list(google.rpc.__path__)[0])))')
test -f "$googleapis/google/rpc/error_details.proto" || {
  echo "build-web: google/rpc/error_details.proto not found under $googleapis" >&2
  exit 1
}

rm -rf web/src/gen
mkdir -p web/src/gen
"$PY" -m grpc_tools.protoc -I protos -I "$googleapis" \
  --plugin=protoc-gen-es=web/node_modules/.bin/protoc-gen-es \
  --es_out=web/src/gen --es_opt=target=ts \
  protos/osago/v1/*.proto google/rpc/error_details.proto

(cd web && node_modules/.bin/tsc -p tsconfig.json)

mkdir -p web_bridge/static
(cd web && node_modules/.bin/esbuild src/main.ts \
  --bundle --format=esm --platform=browser --target=es2020 \
  --minify --charset=ascii --legal-comments=eof \
  --log-level=warning --outfile=../web_bridge/static/app.js)

echo "build-web: web/src/gen and web_bridge/static/app.js built"
