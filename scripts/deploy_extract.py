"""Pulls checkable files out of the chart's output for scripts/check-deploy.sh.

    deploy_extract.py envoy RENDERED OUT       the Envoy ConfigMap's envoy.yaml, its certificate
                                               paths (/etc/envoy-tls/, mounted Secrets in a pod)
                                               pointed at stand-in certificates made beside OUT,
                                               since `envoy --mode validate` reads them
    deploy_extract.py rules RENDERED OUT       the PrometheusRule's groups, as a rules file
    deploy_extract.py dashboard JSON OUT       every dashboard query as a recording rule, so that
                                               promtool parses the PromQL (Grafana's variables
                                               replaced by plain values first)

Exits 1 with a message when the rendered output lacks what is asked for.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Grafana's variables, replaced so that promtool can parse each query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$namespace": ".*", "$insurer": ".*"}


ENVOY_TLS = "/etc/envoy-tls/"


def stand_in_certificates(root: Path) -> Path:
    """public/ and upstream/ as the chart mounts them (tls.crt, tls.key, ca.crt), from a CA made
    here: only their form matters to the validation."""
    import trustme  # noqa: PLC0415 - a development dependency, as this script is

    ca = trustme.CA()
    issued = ca.issue_cert("osago.example")
    for part in ("public", "upstream"):
        folder = root / part
        folder.mkdir(parents=True, exist_ok=True)
        issued.private_key_pem.write_to_path(str(folder / "tls.key"))
        (folder / "tls.crt").write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
        ca.cert_pem.write_to_path(str(folder / "ca.crt"))
    return root


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def one(path: Path, kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in documents(path) if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    if len(found) != 1:
        sys.exit(f"{path}: expected one {kind} named *{suffix}, found {len(found)}")
    return found[0]


def panel_queries(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for panel in panels:
        yield from panel_queries(panel.get("panels", []))
        for target in panel.get("targets", []):
            yield f"{panel['title']} / {target['refId']}", target["expr"]


def main(command: str, source: Path, out: Path) -> None:
    if command == "envoy":
        config = one(source, "ConfigMap", "-envoy")["data"]["envoy.yaml"]
        out.write_text(
            config.replace(ENVOY_TLS, str(stand_in_certificates(out.parent / "envoy-tls")) + "/"), encoding="utf-8"
        )
    elif command == "rules":
        out.write_text(yaml.safe_dump(one(source, "PrometheusRule")["spec"]), encoding="utf-8")
    elif command == "dashboard":
        dashboard = json.loads(source.read_text(encoding="utf-8"))
        rules = []
        for number, (where, query) in enumerate(panel_queries(dashboard["panels"])):
            expr = query
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            if "$" in expr:
                sys.exit(f"{where}: unknown Grafana variable in {expr!r}")
            rules.append({"record": f"dashboard:query_{number}", "expr": expr})
        if not rules:
            sys.exit(f"{source}: no queries")
        out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    else:
        sys.exit(f"unknown command {command!r}")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
