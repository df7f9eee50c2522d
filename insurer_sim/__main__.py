"""`python -m insurer_sim`: the simulator as a process, configured by OSAGO_SIM_* variables."""

from __future__ import annotations

import os

from insurer_sim.config import SimConfig
from insurer_sim.server import run_process, serve_forever


def main() -> None:
    run_process(serve_forever(SimConfig.from_env(os.environ)))


if __name__ == "__main__":
    main()
