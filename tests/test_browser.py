"""The page in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the real
stack: simulated insurers, a gateway per insurer, the aggregator, web_bridge serving the page and
Envoy's grpc_web bridge in front of both — one origin for the page and its grpc-web calls. The
tests marked `EDGES` run a second time with web_bridge alone as the edge (its own grpc-web
endpoint, as after a plain `pip install .`), so the page is proven unchanged behind either.

Sessions are short (simulator time × 0.1, a 6 s session limit) so offers visibly arrive at
different moments, the slowest insurers miss the limit, and each test takes seconds.
Screenshots go to test-output/browser/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
import pytest
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ROOT

pytestmark = pytest.mark.functional

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OUTPUT = ROOT / "test-output" / "browser"
INSURERS = 12
TIME_SCALE = 0.1
SESSION_LIMIT_S = 6.0
SEED = 7
# Generous for a loaded CI machine; a session itself ends within SESSION_LIMIT_S.
WAIT_MS = 30_000
# The page behind Envoy, and behind web_bridge alone.
EDGES = pytest.mark.parametrize("stack", ["envoy", "web_bridge"], indirect=True)

# Records, page-side, when each offer row and each insurer state appeared (performance.now()).
RECORDER = """() => {
  window.__offers = [];
  window.__states = [];
  window.__connection = [];
  const stamp = () => performance.now();
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) {
        if (node.nodeType === 1 && node.dataset.testid === "offer") {
          window.__offers.push({ id: node.dataset.insurerId, t: stamp() });
        }
      }
    }
  }).observe(document.getElementById("offers"), { childList: true });
  new MutationObserver((records) => {
    for (const record of records) {
      const row = record.target.closest ? record.target.closest("[data-testid=insurer-status]") : null;
      if (row && record.type === "attributes") {
        window.__states.push({
          id: row.dataset.insurerId,
          state: row.dataset.state,
          detail: row.querySelector(".insurer-detail").textContent,
          t: stamp(),
        });
      }
    }
  }).observe(document.getElementById("insurers"), {
    subtree: true, attributes: true, attributeFilter: ["data-state"],
  });
  new MutationObserver(() => {
    const el = document.getElementById("connection");
    window.__connection.push(el.dataset.state || "");
  }).observe(document.getElementById("connection"), { attributes: true, attributeFilter: ["data-state"] });
}"""


@dataclass
class Stack:
    page_url: str
    aggregator_target: str

    async def snapshot(self, request_id: str) -> pb.QuoteRequest:
        async with grpc.aio.insecure_channel(self.aggregator_target) as channel:
            stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
            reply = await stub.GetQuoteRequest(pb.GetQuoteRequestRequest(request_id=request_id), timeout=10)
            return reply.quote_request


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """`osago up` with short sessions, behind Envoy unless the test asks for another edge; its
    ready line names the page (`page=URL`)."""
    edge = getattr(request, "param", "envoy")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "osago_cli.main", "up",
        "--insurers", str(INSURERS), "--time-scale", str(TIME_SCALE),
        "--session-limit", str(SESSION_LIMIT_S), "--seed", str(SEED),
        "--aggregator-port", "0", "--sim-port", "0", "--page-port", "0", "--edge", edge,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    drain: asyncio.Task[None] | None = None
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 90)).decode().strip()
        assert line.startswith("ready "), f"osago up did not start: {line!r}"
        fields = dict(pair.split("=", 1) for pair in line.split()[1:] if "=" in pair)
        assert "page" in fields, f"osago up names no page: {line!r}"
        assert fields["edge"] == edge, line
        drain = asyncio.create_task(_drain(process.stdout))
        yield Stack(fields["page"], fields["aggregator"])
    finally:
        if drain is not None:
            drain.cancel()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


class FlakyLink:
    """A TCP relay in front of the page's origin whose `cut` drops every open connection and
    refuses new ones for a while: the network going away under a running stream."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.down_until = 0.0
        self.cuts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self, seconds: float) -> None:
        self.cuts += 1
        self.down_until = time.monotonic() + seconds
        self._drop_all()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.down_until:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)
        self._writers.discard(writer)
        self._writers.discard(up_writer)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install -y chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Browser, url: str, width: int = 1280, height: int = 900, requests: list[str] | None = None
) -> Page:
    """A fresh browser context on `url`, once the page's script has run; `requests` collects the
    URL of every request the page makes."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    await page.goto(url)
    await page.wait_for_selector("html[data-ready=true]")
    return page


async def record(page: Page) -> None:
    await page.evaluate(RECORDER)


async def submit_preset(page: Page, preset: str) -> None:
    """Fills the form from an example and submits it."""
    await page.click(f"[data-testid=preset-{preset}]")
    await page.click("[data-testid=submit]")
    await page.wait_for_url(re.compile(r"[?&]request="))


def request_id_of(page: Page) -> str:
    return parse_qs(urlparse(page.url).query)["request"][0]


async def offers(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await page.eval_on_selector_all(
        "[data-testid=offer]",
        "rows => rows.map(r => ({id: r.dataset.insurerId, kopecks: r.dataset.premiumKopecks,"
        " price: r.querySelector('[data-testid=offer-price]').textContent}))",
    )
    return rows


async def statuses(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = await page.eval_on_selector_all(
        "[data-testid=insurer-status]",
        "rows => rows.map(r => ({id: r.dataset.insurerId, state: r.dataset.state,"
        " detail: r.querySelector('.insurer-detail').textContent,"
        " code: (r.querySelector('.reason-code') || {}).textContent || ''}))",
    )
    return rows


async def wait_for_summary(page: Page) -> str:
    summary = page.locator("[data-testid=summary]")
    await summary.wait_for(state="visible")
    return await summary.inner_text()


def roubles(kopecks: int) -> str:
    """The page's format: thin no-break spaces between thousands, comma, no-break space, ₽."""
    whole = f"{kopecks // 100:,}".replace(",", "\u202f")
    return f"{whole},{kopecks % 100:02d}\u00a0₽"


def screenshot_path(name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / name


@EDGES
async def test_offers_stream_in_one_at_a_time_with_statuses_countdown_and_summary(stack: Stack, browser: Browser) -> None:
    requests: list[str] = []
    page = await open_page(browser, stack.page_url, requests=requests)
    await record(page)
    await submit_preset(page, "moscow-young-driver")
    request_id = request_id_of(page)

    # While the first offers are in, the slower insurers show as pending / working, with words.
    await page.wait_for_selector("[data-testid=offer]")
    early = await statuses(page)
    waiting = [s for s in early if s["state"] in ("pending", "accepted")]
    assert waiting, early
    assert all(s["detail"].strip() for s in waiting), waiting
    countdown = await page.inner_text("[data-testid=countdown]")
    assert re.fullmatch(r"\d+ s left", countdown), countdown

    text = await wait_for_summary(page)
    snapshot = await stack.snapshot(request_id)
    assert snapshot.status != 1  # SESSION_STATUS_RUNNING: finished
    # The session had the configured limit (it ends by its deadline: test_session, test_mesh).
    assert (snapshot.deadline.ToDatetime() - snapshot.created_at.ToDatetime()).total_seconds() == SESSION_LIMIT_S

    # Every offer of the session, once, cheapest first, priced exactly from the int64 kopecks.
    rows = await offers(page)
    assert sorted(r["id"] for r in rows) == sorted(q.insurer_id for q in snapshot.quotes)
    assert len(rows) >= 3, rows
    kopecks = [int(r["kopecks"]) for r in rows]
    assert kopecks == sorted(kopecks)
    by_insurer = {q.insurer_id: q.premium_kopecks for q in snapshot.quotes}
    for row in rows:
        assert int(row["kopecks"]) == by_insurer[row["id"]]
        assert row["price"] == roubles(by_insurer[row["id"]])

    # They arrived one by one, not in one batch.
    arrivals = await page.evaluate("window.__offers")
    times = sorted(a["t"] for a in arrivals)
    assert len(arrivals) == len(rows)
    assert times[-1] - times[0] > 500, times
    distinct = [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > 50]
    assert len(distinct) >= 3, times
    # Each insurer was seen working before its answer (the status list is live, not an end report).
    seen = await page.evaluate("window.__states")
    assert any(s["state"] in ("pending", "accepted") for s in seen)

    # Failed insurers show the human reason and the reason code; the rest their offer.
    final = await statuses(page)
    assert sorted(s["id"] for s in final) == sorted(i.insurer_id for i in snapshot.insurers)
    failed = [s for s in final if s["state"] == "failed"]
    assert failed, final
    failures = {f.insurer_id: f for f in snapshot.failures}
    for row in failed:
        assert row["detail"].strip() and row["code"].strip(), row
        assert failures[row["id"]].message in row["detail"]
    assert {s["id"] for s in final if s["state"] == "offer"} == set(by_insurer)
    assert not [s for s in final if s["state"] in ("pending", "accepted")]

    # The summary: status, message, counts; the bar shows the time used.
    assert f"{len(snapshot.insurers)} insurers asked" in text
    assert f"{len(rows)} offer" in text
    assert f"{len(failed)} without an offer" in text
    assert re.fullmatch(r"Finished after \d+\.\d s", await page.inner_text("[data-testid=countdown]"))
    assert int(await page.get_attribute("[data-testid=progress]", "value") or 0) > 0

    # The breakdown opens on demand with the Bank of Russia coefficients.
    first = page.locator("[data-testid=offer]").first
    breakdown = first.locator("details")
    assert not await breakdown.get_attribute("open")
    await first.locator("summary").click()
    terms = await first.locator("dt abbr").all_inner_texts()
    assert terms[:7] == ["ТБ", "КТ", "КБМ", "КВС", "КО", "КМ", "КС"]

    # Nothing but the page's own origin was ever called (grpc-web included).
    origin = "{0.scheme}://{0.netloc}/".format(urlparse(stack.page_url))
    assert requests and all(url.startswith(origin) for url in requests), requests
    assert any("/osago.v1.AggregatorService/StreamQuoteEvents" in url for url in requests)
    path = screenshot_path("finished.png")
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


@EDGES
async def test_invalid_vin_and_licence_show_messages_on_their_fields(stack: Stack, browser: Browser) -> None:
    page = await open_page(browser, stack.page_url)
    await page.click("[data-testid=preset-kazan-two-drivers]")
    await page.fill('[data-field="application.vehicle.vin"]', "Z94G2813BMR12345")  # 16 characters
    await page.fill('[data-field="application.drivers[1].licence_number"]', "12AB")
    await page.click("[data-testid=submit]")

    vin_error = page.locator('[data-error-for="application.vehicle.vin"]')
    await vin_error.wait_for(state="visible")
    assert "17 characters" in await vin_error.inner_text()
    assert await page.get_attribute('[data-field="application.vehicle.vin"]', "aria-invalid") == "true"
    licence_error = page.locator('[data-error-for="application.drivers[1].licence_number"]')
    assert (await licence_error.inner_text()).strip()
    assert not (await page.inner_text('[data-error-for="application.drivers[0].licence_number"]')).strip()
    # The field with the first violation has the focus; no session started.
    assert await page.evaluate("document.activeElement.dataset.field") == "application.vehicle.vin"
    assert "request=" not in page.url
    assert await page.locator("[data-testid=session]").is_hidden()

    # Correcting the field retires its message; the fixed application goes through.
    await page.fill('[data-field="application.vehicle.vin"]', "Z94G2813BMR123456")
    assert not (await vin_error.inner_text()).strip()
    await page.fill('[data-field="application.drivers[1].licence_number"]', "1629730416")
    await page.click("[data-testid=submit]")
    await page.wait_for_url(re.compile(r"[?&]request="))
    await wait_for_summary(page)


async def test_reload_mid_session_resumes_without_duplicate_rows(stack: Stack, browser: Browser) -> None:
    page = await open_page(browser, stack.page_url)
    await submit_preset(page, "kazan-two-drivers")
    request_id = request_id_of(page)
    await page.wait_for_function("document.querySelectorAll('[data-testid=offer]').length >= 2")
    before = [r["id"] for r in await offers(page)]
    assert await page.locator("[data-testid=summary]").is_hidden(), "the session ended before the reload"

    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await record(page)
    assert request_id_of(page) == request_id
    await wait_for_summary(page)

    rows = [r["id"] for r in await offers(page)]
    snapshot = await stack.snapshot(request_id)
    assert len(rows) == len(set(rows)), rows
    assert set(before) <= set(rows)
    assert sorted(rows) == sorted(q.insurer_id for q in snapshot.quotes)
    assert len(rows) == len(snapshot.quotes)
    ids = [s["id"] for s in await statuses(page)]
    assert len(ids) == len(set(ids)) == len(snapshot.insurers)


@EDGES
async def test_network_loss_mid_session_reconnects_and_misses_nothing(stack: Stack, browser: Browser) -> None:
    page_url = urlparse(stack.page_url)
    link = FlakyLink(page_url.hostname or "127.0.0.1", page_url.port or 80)
    await link.start()
    try:
        page = await open_page(browser, f"http://127.0.0.1:{link.port}/")
        await record(page)
        await submit_preset(page, "spb-unlimited")
        request_id = request_id_of(page)
        await page.wait_for_selector("[data-testid=offer]")
        assert await page.locator("[data-testid=summary]").is_hidden(), "the session ended before the cut"

        link.cut(1.5)  # every connection dropped; new ones refused for 1.5 s
        await page.wait_for_function("window.__connection.includes('reconnecting')")
        await wait_for_summary(page)
        assert await page.evaluate("window.__connection.includes('live')")
    finally:
        await link.stop()

    rows = [r["id"] for r in await offers(page)]
    snapshot = await stack.snapshot(request_id)
    assert len(rows) == len(set(rows)), rows
    assert sorted(rows) == sorted(q.insurer_id for q in snapshot.quotes)
    arrivals = [a["id"] for a in await page.evaluate("window.__offers")]
    assert sorted(arrivals) == sorted(rows)  # each row was added once, never re-added
    ids = [s["id"] for s in await statuses(page)]
    assert len(ids) == len(set(ids)) == len(snapshot.insurers)


async def test_phone_width_has_no_horizontal_scrolling(stack: Stack, browser: Browser) -> None:
    page = await open_page(browser, stack.page_url, width=375, height=812)
    overflow = "document.documentElement.scrollWidth - window.innerWidth"
    assert await page.evaluate(overflow) <= 0
    await page.click("[data-testid=preset-kazan-two-drivers]")
    await page.click("[data-testid=submit]")
    await wait_for_summary(page)
    await page.locator("[data-testid=offer] summary").first.click()
    assert await page.evaluate(overflow) <= 0
    # Every form control has a label.
    unlabeled = await page.evaluate(
        "[...document.querySelectorAll('input, select')].filter(el => !el.labels || el.labels.length === 0).length"
    )
    assert unlabeled == 0
    path = screenshot_path("finished-375px.png")
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")

