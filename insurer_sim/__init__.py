"""A simulator of insurers' OSAGO HTTP APIs for the demo, the tests and the benchmarks.

Each insurer of the catalogue answers in its own dialect under `/insurers/{insurer_id}`, prices
applications with the Bank of Russia formula, takes a log-normal time to answer, declines some,
and issues each outcome once into a ledger that `/_sim/ledger` shows; an insurer of the "push"
dialect POSTs each outcome, signed, to the callback URL it was given (`/_sim/callbacks` lists the
attempts). Faults (down, blackhole, slow, error, ratelimit, malformed, flapping, decline, and the
callback_* ones) are switched per insurer at run time over `/_sim/insurers/{id}/fault` (see
`insurer_sim.control`) or `osago sim fault|heal`.
"""

from insurer_sim.app import make_app
from insurer_sim.config import SimConfig
from insurer_sim.server import SimServer, serve_forever

__all__ = ["SimConfig", "SimServer", "make_app", "serve_forever"]
