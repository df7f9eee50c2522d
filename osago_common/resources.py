"""Files shipped inside the installed packages (package data): the page of web_bridge, the Envoy
config of the dev mesh. Found through the package, so they are the same in a checkout, an
editable install and a plain `pip install .`."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """The filesystem path of `parts` inside `package`. Packages are installed as directories
    (never zipped), so a resource is a real path that aiohttp and Envoy can open."""
    resource = files(package).joinpath(*parts)
    if not isinstance(resource, Path):
        raise RuntimeError(f"{package} is not installed as a directory, so {'/'.join(parts)} has no path")
    return resource
