"""Reading a service's /metrics over HTTP as Prometheus would, parsed by prometheus-client's own
parser; and promtool, from Debian's prometheus package."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"


def require(binary: str) -> str:
    """The binary's path; fails (never skips) when Debian's prometheus package is missing."""
    found = shutil.which(binary) or binary
    assert shutil.which(found), f"{binary} is missing: install Debian's prometheus package (make prometheus)"
    return found


@dataclass
class Scrape:
    """One scrape of an endpoint: its text and every sample by (name, labels)."""

    text: str
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float:
        """The sample's value; KeyError naming it when absent."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            raise KeyError(f"{name}{labels} not exported")
        return self.samples[key]

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= ls)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def label_values(self) -> set[str]:
        return {value for _, labels in self.samples for _, value in labels}


async def scrape(http: aiohttp.ClientSession, url: str) -> Scrape:
    async with http.get(url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return Scrape(text, samples)


def promtool_check(text: str) -> None:
    """`promtool check metrics` on an exposition: naming, units, types, help texts."""
    result = subprocess.run(
        [require(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
