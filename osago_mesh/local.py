"""The whole mesh inside one event loop: simulator, a gateway per insurer and the aggregator,
each a real server on a free localhost port, talking real HTTP and gRPC. The functional tests and
`osago bench faults --in-process` run on it."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import grpc
from osago.v1 import aggregator_service_pb2_grpc

from aggregator.access import AccessKeys
from aggregator.service import AggregatorService
from aggregator.settings import AggregatorSettings, GatewayEndpoint
from insurer_gateway.service import GatewayService
from insurer_gateway.settings import GatewaySettings
from insurer_sim import profiles as sim_profiles
from insurer_sim.config import SimConfig
from insurer_sim.server import SimServer
from osago_common import insurers
from osago_common.metrics import MetricsEndpoint
from osago_common.service_tokens import VerifierConfig
from osago_common.tls import TlsFiles
from osago_mesh.client import Mesh
from osago_mesh.devpki import DevPki


@dataclass
class LocalMesh(Mesh):
    """A mesh inside this event loop, with its service objects at hand."""

    sim: SimServer
    gateways: dict[str, GatewayService]
    gateway_ports: dict[str, int]
    aggregator: AggregatorService
    # The secret the insurers that call back sign with, and their gateways verify with.
    callback_secret: str = field(default="", repr=False)
    # Each service's Prometheus endpoint ("aggregator", "gateway alfa", ...): its /metrics URL.
    metrics: dict[str, str] = field(default_factory=dict)


@contextlib.asynccontextmanager
async def start_mesh(
    n: int = 10,
    time_scale: float = 0.01,
    session_limit_s: float = 60.0,
    seed: int | None = 7,
    orphan_grace_s: float = 0.0,
    gateway_overrides: dict[str, Any] | None = None,
    aggregator_overrides: dict[str, Any] | None = None,
    ids: Sequence[str] | None = None,
    pki: DevPki | None = None,
    sim_overrides: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[LocalMesh]:
    """Starts the first `n` insurers of the catalogue (or those of `ids`, in that order), their
    gateways and the aggregator. With `pki`, every gRPC link is mTLS (the gateways take only the
    aggregator's certificate), the aggregator also has a JWT port (`jwt_port`), and `channel`
    calls as core-app. `sim_overrides` changes simulated insurers' behaviour by id (e.g.
    `{"sovcom": {"decline_rate": 0.0}}` for a test that needs its offer). Every service serves
    its metrics on a free port (`metrics`: their URLs)."""
    gateway_tls = aggregator_tls = None
    if pki is not None:
        gateway_tls = TlsFiles(pki.cert("gateway"), pki.key("gateway"), pki.ca, allowed_peers=("aggregator",))
        aggregator_tls = TlsFiles(pki.cert("aggregator"), pki.key("aggregator"), pki.ca)
    profiles = insurers.first(n) if ids is None else tuple(insurers.BY_ID[i] for i in ids)
    # The secret the insurers that call back sign with, and their gateways verify with.
    callback_secret = secrets.token_urlsafe(24)
    async with contextlib.AsyncExitStack() as stack:
        # Each insurer on its own port too, so `down` is a truly refused connection.
        config = SimConfig(
            insurers=tuple(
                replace(sim_profiles.profile(p.insurer_id), **(sim_overrides or {}).get(p.insurer_id, {}))
                for p in profiles
            ),
            time_scale=time_scale,
            seed=seed,
            insurer_ports=True,
            callback_secret=callback_secret,
        )
        sim = SimServer(config)
        await sim.start()
        stack.push_async_callback(sim.stop)
        http = aiohttp.ClientSession()
        stack.push_async_callback(http.close)
        async with http.get(f"{sim.url}/_sim/insurers") as response:
            base_urls = {i["insurer_id"]: i["base_url"] for i in await response.json()}
        gateways: dict[str, GatewayService] = {}
        ports: dict[str, int] = {}
        for p in profiles:
            gateway = GatewayService(
                GatewaySettings(
                    insurer_id=p.insurer_id,
                    insurer_name=p.name,
                    dialect=p.dialect,
                    base_url=base_urls[p.insurer_id],
                    tls=gateway_tls,
                    metrics=METRICS,
                    **{"callback_secret": callback_secret, **(gateway_overrides or {})},
                )
            )
            ports[p.insurer_id] = await gateway.start()
            stack.push_async_callback(gateway.stop)
            gateways[p.insurer_id] = gateway
        settings = AggregatorSettings(
            bind="127.0.0.1:0",
            gateways=tuple(GatewayEndpoint(p.insurer_id, p.name, f"127.0.0.1:{ports[p.insurer_id]}") for p in profiles),
            session_limit_s=session_limit_s,
            orphan_grace_s=orphan_grace_s,
            metrics=METRICS,
        )
        if pki is not None:
            settings = replace(
                settings,
                tls=aggregator_tls,
                jwt_bind="127.0.0.1:0",
                jwt=VerifierConfig(pki.jwks, reload_s=0.0),
                access_keys=AccessKeys.parse(pki.access_keys),
            )
        aggregator = AggregatorService(replace(settings, **(aggregator_overrides or {})))
        port = await aggregator.start()
        stack.push_async_callback(aggregator.stop)
        target = f"127.0.0.1:{port}"
        channel = (
            grpc.aio.secure_channel(target, pki.channel_credentials())
            if pki is not None
            else grpc.aio.insecure_channel(target)
        )
        stack.push_async_callback(channel.close)
        stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
        yield LocalMesh(
            sim.url,
            {i: f"127.0.0.1:{port}" for i, port in ports.items()},
            target,
            http,
            channel,
            stub,
            sim=sim,
            gateways=gateways,
            gateway_ports=ports,
            aggregator=aggregator,
            callback_secret=callback_secret,
            metrics=_metrics_urls(aggregator, gateways),
        )


# A free port on the loopback for every service's /metrics.
METRICS = MetricsEndpoint("127.0.0.1", 0)


def _metrics_urls(aggregator: AggregatorService, gateways: dict[str, GatewayService]) -> dict[str, str]:
    servers = {"aggregator": aggregator.metrics_server} | {
        f"gateway {i}": g.metrics_server for i, g in gateways.items()
    }
    return {name: server.url for name, server in servers.items() if server is not None}
