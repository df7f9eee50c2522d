#!/usr/bin/env bash
# Regenerates generated/ from protos/: Python messages, .pyi stubs and gRPC stubs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf generated/osago
mkdir -p generated
"$PY" -m grpc_tools.protoc -I protos \
  --python_out=generated --pyi_out=generated --grpc_python_out=generated \
  protos/osago/v1/*.proto
printf '"""Generated from protos/osago (package osago)."""\n' > generated/osago/__init__.py
printf '"""Generated from protos/osago/v1 (package osago.v1)."""\n' > generated/osago/v1/__init__.py
