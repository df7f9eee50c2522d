"""The simulator's settings: which insurers it plays, how fast time runs, where it listens.

| variable | default | meaning |
|---|---|---|
| `OSAGO_SIM_INSURERS` | the whole catalogue | the first N insurers of the catalogue, or catalogue ids: `alfa,vsk` |
| `OSAGO_SIM_TIME_SCALE` | `1.0` | multiplies every simulated delay (0.01: a 2 s insurer takes 20 ms) |
| `OSAGO_SIM_SEED` | random | seed of the draws (latency, declines, ids), for reproducible runs |
| `OSAGO_SIM_HOST` | `127.0.0.1` | address to listen on |
| `OSAGO_SIM_PORT` | `0` | port to listen on; 0 picks a free one (printed at start) |
| `OSAGO_SIM_INSURER_PORTS` | `false` | also serve each insurer's API on a free port of its own (`true`), listed as `base_url` by `/_sim/insurers`, so that the `down` fault refuses connections |
| `OSAGO_SIM_CALLBACK_SECRET` | random | the secret every insurer with callbacks signs them with (shared with the partner's gateways) |
| `OSAGO_SIM_CALLBACK_SECRET_<ID>` | the above | insurer ID's own secret (the id upper-cased: `OSAGO_SIM_CALLBACK_SECRET_SOVCOM`) |
| `OSAGO_METRICS_PORT` / `OSAGO_METRICS_HOST` | unset (none) / `127.0.0.1` | the process's own Prometheus metrics (CPU, memory) at `/metrics` (osago_common.metrics; 0: a free port) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from insurer_sim.profiles import PROFILES, InsurerProfile, first, profile
from osago_common.env import SettingsError, env_flag, env_float, env_int, env_str
from osago_common.metrics import MetricsEndpoint

# Insurers whose "ready in" hints are a fixed polling cadence rather than an honest estimate.
VAGUE_HINTS: frozenset[str] = frozenset({"reso", "vsk", "soglasie", "tstrah", "zetta", "ugoria"})


@dataclass(frozen=True)
class SimConfig:
    insurers: tuple[InsurerProfile, ...] = PROFILES
    time_scale: float = 1.0
    seed: int | None = None
    host: str = "127.0.0.1"
    port: int = 0
    # Also serve each insurer's API on a port of its own, which the `down` fault closes.
    insurer_ports: bool = False
    # Ids of the insurers that hint a fixed 1 s (× time_scale) instead of the time really left.
    vague_hints: frozenset[str] = VAGUE_HINTS
    # The secret callbacks are signed with: an insurer's own, else the common one, else one drawn
    # at random per run (callbacks nobody can verify).
    callback_secret: str | None = field(default=None, repr=False)
    callback_secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    # Where the process's metrics are served; no port: nowhere.
    metrics: MetricsEndpoint = field(default_factory=MetricsEndpoint)

    def __post_init__(self) -> None:
        if not self.insurers:
            raise ValueError("at least one insurer must be simulated")
        ids = [p.insurer_id for p in self.insurers]
        if len(set(ids)) != len(ids):
            raise ValueError(f"insurer ids must be unique: {', '.join(ids)}")
        if not (self.time_scale > 0 and self.time_scale != float("inf")):
            raise ValueError(f"time_scale must be a positive finite number, not {self.time_scale}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> SimConfig:
        """Settings from `env` (see the module's table); `overrides` win and skip their variable."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown SimConfig fields: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = dict(overrides)
        if "insurers" not in values:
            values["insurers"] = _insurers(env_str(env, "OSAGO_SIM_INSURERS", str(len(PROFILES))))
        if "time_scale" not in values:
            values["time_scale"] = env_float(env, "OSAGO_SIM_TIME_SCALE", 1.0)
            if values["time_scale"] <= 0:
                raise SettingsError("OSAGO_SIM_TIME_SCALE must be positive")
        if "seed" not in values and env.get("OSAGO_SIM_SEED"):
            values["seed"] = env_int(env, "OSAGO_SIM_SEED", 0)
        if "host" not in values:
            values["host"] = env_str(env, "OSAGO_SIM_HOST", "127.0.0.1")
        if "port" not in values:
            values["port"] = env_int(env, "OSAGO_SIM_PORT", 0)
            if not 0 <= values["port"] <= 65535:
                raise SettingsError("OSAGO_SIM_PORT must be 0..65535")
        if "insurer_ports" not in values:
            values["insurer_ports"] = env_flag(env, "OSAGO_SIM_INSURER_PORTS")
        if "callback_secret" not in values:
            values["callback_secret"] = env.get("OSAGO_SIM_CALLBACK_SECRET") or None
        if "callback_secrets" not in values:
            own = {p.insurer_id: env.get(secret_variable(p.insurer_id)) for p in values["insurers"]}
            values["callback_secrets"] = {i: secret for i, secret in own.items() if secret}
        if "metrics" not in values:
            values["metrics"] = MetricsEndpoint.from_env(env)
        return cls(**values)


def secret_variable(insurer_id: str) -> str:
    """The variable holding insurer `insurer_id`'s own callback secret."""
    return "OSAGO_SIM_CALLBACK_SECRET_" + "".join(c if c.isalnum() else "_" for c in insurer_id.upper())


def _insurers(raw: str) -> tuple[InsurerProfile, ...]:
    try:
        if raw.strip().isdigit():
            return first(int(raw))
        chosen = tuple(profile(i.strip()) for i in raw.split(",") if i.strip())
    except (KeyError, ValueError) as exc:
        raise SettingsError(f"OSAGO_SIM_INSURERS: {exc.args[0]}") from None
    if not chosen:
        raise SettingsError("OSAGO_SIM_INSURERS names no insurer")
    return chosen
