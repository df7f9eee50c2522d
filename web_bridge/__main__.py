"""`python -m web_bridge`: the bridge as a process, configured by OSAGO_BRIDGE_* variables."""

from __future__ import annotations

import os

from osago_common import gc_policy, loop
from web_bridge.service import serve_forever
from web_bridge.settings import BridgeSettings


def main() -> None:
    gc_policy.install(os.environ)
    loop.run(serve_forever(BridgeSettings.from_env(os.environ)))


if __name__ == "__main__":
    main()
