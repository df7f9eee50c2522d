"""`python -m insurer_sim`: the simulator as a process, configured by OSAGO_SIM_* variables."""

from __future__ import annotations

import os

from insurer_sim.config import SimConfig
from insurer_sim.server import serve_forever
from osago_common import gc_policy, loop


def main() -> None:
    gc_policy.install(os.environ)
    loop.run(serve_forever(SimConfig.from_env(os.environ)))


if __name__ == "__main__":
    main()
