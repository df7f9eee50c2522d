#!/usr/bin/env bash
# Checks the deployment files, as `make test` runs them (after `make setup`):
#   - the Dockerfile, with hadolint;
#   - helm/osago/files/envoy.yaml, equal to envoy/envoy.yaml (the chart cannot read outside itself);
#   - the chart: `helm lint --strict` and `helm template` with the default values and with
#     values-production.yaml, every manifest validated against the Kubernetes schemas of the
#     oldest and newest supported versions (kubernetes-validate --strict), the Envoy config each
#     renders checked by `envoy --mode validate`;
#   - the alert rules (promtool check rules, promtool test rules), the rules as rendered into the
#     PrometheusRule, and every query of the Grafana dashboard (parsed by promtool).
# Helm comes from scripts/ensure-helm.sh (cached in .tools/); promtool from Debian's prometheus
# package, installed when missing (it starts no server here).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY="$VENV/bin/python"
CHART=helm/osago
# The chart's kubeVersion floor, and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS=(1.27.0 1.37.0)
# Custom resources the chart may render, which kubernetes-validate has no schema for (their
# content is checked otherwise: the PrometheusRule by promtool below).
CRD_KINDS='PodMonitor|PrometheusRule'

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "check-deploy: $*"; }

step "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile

step "envoy config copy"
if ! cmp -s envoy/envoy.yaml "$CHART/files/envoy.yaml"; then
    echo "$CHART/files/envoy.yaml differs from envoy/envoy.yaml; run: cp envoy/envoy.yaml $CHART/files/envoy.yaml" >&2
    exit 1
fi

helm=$(PY="$PY" scripts/ensure-helm.sh)
export HOME="$work/home" HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"
mkdir -p "$HOME"

for values in default production; do
    args=()
    [[ $values == production ]] && args=(-f "$CHART/values-production.yaml")
    step "helm lint --strict ($values values)"
    "$helm" lint --strict --quiet "$CHART" "${args[@]}"
    step "helm template ($values values)"
    "$helm" template osago "$CHART" --namespace osago "${args[@]}" >"$work/$values.yaml"
    for version in "${KUBE_VERSIONS[@]}"; do
        step "kubernetes-validate --strict ($values values, Kubernetes $version)"
        "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/$values.yaml" >"$work/validate.log" 2>&1 || {
            cat "$work/validate.log" >&2
            exit 1
        }
        if grep -v -E "Couldn't find schema for kind ($CRD_KINDS) " "$work/validate.log" | grep -q .; then
            cat "$work/validate.log" >&2
            exit 1
        fi
    done
    step "envoy --mode validate ($values values)"
    "$PY" scripts/deploy_extract.py envoy "$work/$values.yaml" "$work/envoy-$values.yaml"
    "$VENV/bin/envoy" --mode validate -c "$work/envoy-$values.yaml" --log-level error >/dev/null
done

if ! command -v promtool >/dev/null; then
    step "installing promtool (Debian package prometheus)"
    install=(apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=600 prometheus)
    DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${install[@]}" >/dev/null; }
fi
step "promtool check rules / test rules"
promtool check rules "$CHART/files/alerts.yaml"
promtool test rules tests/prometheus/alerts_test.yaml
"$PY" scripts/deploy_extract.py rules "$work/production.yaml" "$work/prometheusrule.yaml"
promtool check rules "$work/prometheusrule.yaml"
"$PY" scripts/deploy_extract.py dashboard "$CHART/files/dashboard.json" "$work/dashboard-rules.yaml"
promtool check rules "$work/dashboard-rules.yaml"
step "ok"
