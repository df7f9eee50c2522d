#!/usr/bin/env bash
# Regenerates generated/ from protos/: Python messages and gRPC stubs, with typed .pyi stubs for
# both from mypy-protobuf (protoc's own --pyi_out types the messages only, and not the gRPC stubs
# and servicers, which mypy would then see as Any). The gRPC stubs are for grpc.aio only (what
# the project uses), and servicer bases are concrete as at run time, where a method not
# overridden answers UNIMPLEMENTED.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BIN=$(dirname "$PY")
rm -rf generated/osago
mkdir -p generated
"$PY" -m grpc_tools.protoc -I protos \
  --plugin=protoc-gen-mypy="$BIN/protoc-gen-mypy" --plugin=protoc-gen-mypy_grpc="$BIN/protoc-gen-mypy_grpc" \
  --python_out=generated --grpc_python_out=generated \
  --mypy_out=quiet,readable_stubs:generated --mypy_grpc_out=quiet,readable_stubs,only_async,generate_concrete_servicer_stubs:generated \
  protos/osago/v1/*.proto
printf '"""Generated from protos/osago (package osago)."""\n' > generated/osago/__init__.py
printf '"""Generated from protos/osago/v1 (package osago.v1)."""\n' > generated/osago/v1/__init__.py
