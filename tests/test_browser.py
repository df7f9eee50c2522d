"""The page in a real Chromium (Debian's /usr/bin/chromium, driven by Playwright) against the real
stack: simulated insurers, a gateway per insurer, the aggregator, web_bridge serving the page and
Envoy's grpc_web bridge in front of both — one origin for the page and its grpc-web calls. The
tests marked `EDGES` run a second time with web_bridge alone as the edge (its own grpc-web
endpoint, as after a plain `pip install .`), so the page is proven unchanged behind either.

The page speaks Russian by default and English on request; the main flows run in both, with the
browser's language set accordingly and, for English, the page switched to it as a user would.
Texts, money, dates and plural forms are checked against expectations written out in
tests/browser_kit.py; axe-core checks the form, the streaming and the finished page.

Sessions are short (simulator time × 0.1, a 6 s session limit) so offers visibly arrive at
different moments, the slowest insurers miss the limit, and each test takes seconds.
Screenshots go to test-output/browser/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any
from urllib.parse import parse_qs, urlparse

import grpc
import pytest
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, quote_pb2
from playwright.async_api import Browser, Page

from osago_common.insurers import CATALOGUE
from tests.browser_kit import (
    BADGES,
    LOCALES,
    REASONS,
    assert_accessible,
    assert_texts_from_catalogue,
    chromium,
    expected_summary,
    money,
    open_page,
    screenshot,
    screenshot_path,
    spaces,
    summary_of,
    valid_until,
    wait_for,
)

pytestmark = pytest.mark.functional

# The whole catalogue: every dialect, and the two insurers slower than a session (last).
INSURERS = len(CATALOGUE)
TIME_SCALE = 0.1
SESSION_LIMIT_S = 6.0
SEED = 7
# Generous for a loaded CI machine; a session itself ends within SESSION_LIMIT_S.
WAIT_MS = 30_000
# The page behind Envoy, and behind web_bridge alone.
EDGES = pytest.mark.parametrize("stack", ["envoy", "web_bridge"], indirect=True)
LANGS = ["ru", "en"]
# Both languages and both edges in two runs: Russian behind Envoy, English behind web_bridge.
LANGS_AND_EDGES = pytest.mark.parametrize(
    ("stack", "lang"), [("envoy", "ru"), ("web_bridge", "en")], indirect=["stack"]
)

# Records, page-side, when each offer row and each insurer state appeared (performance.now()),
# the connection states and what the screen reader's announcer said.
RECORDER = """() => {
  window.__offers = [];
  window.__states = [];
  window.__connection = [];
  window.__announced = [];
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
  const announcer = document.getElementById("announcer");
  new MutationObserver(() => {
    if (announcer.textContent) window.__announced.push({ text: announcer.textContent, t: stamp() });
  }).observe(announcer, { childList: true, characterData: true, subtree: true });
}"""


@dataclass
class Stack:
    page_url: str
    aggregator_target: str

    async def snapshot(self, page: Page, request_id: str) -> pb.QuoteRequest:
        """The request as the aggregator has it, read with the access token the page keeps."""
        token = await page.evaluate("(id) => sessionStorage.getItem('osago.access.' + id)", request_id)
        assert token, "the page keeps the request's access token"
        async with grpc.aio.insecure_channel(self.aggregator_target) as channel:
            stub = aggregator_service_pb2_grpc.AggregatorServiceStub(channel)
            reply = await stub.GetQuoteRequest(
                pb.GetQuoteRequestRequest(access_token=token, request_id=request_id), timeout=10
            )
            return reply.quote_request


@pytest.fixture
async def stack(request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    """`osago up` with short sessions, behind Envoy unless the test asks for another edge; its
    ready line names the page (`page=URL`)."""
    edge = getattr(request, "param", "envoy")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "osago_cli.main",
        "up",
        "--insurers",
        str(INSURERS),
        "--time-scale",
        str(TIME_SCALE),
        "--session-limit",
        str(SESSION_LIMIT_S),
        "--seed",
        str(SEED),
        "--aggregator-port",
        "0",
        "--sim-port",
        "0",
        "--page-port",
        "0",
        "--edge",
        edge,
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
    async with chromium() as launched:
        yield launched


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
        " price: r.querySelector('[data-testid=offer-price]').textContent,"
        " valid: (r.querySelector('[data-testid=offer-valid-until]') || {}).textContent || ''}))",
    )
    return rows


async def statuses(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = await page.eval_on_selector_all(
        "[data-testid=insurer-status]",
        "rows => rows.map(r => ({id: r.dataset.insurerId, state: r.dataset.state,"
        " outcome: r.dataset.outcome || '', reason: r.dataset.reason || '',"
        " badge: r.querySelector('.insurer-state').textContent,"
        " detail: r.querySelector('.insurer-detail').textContent}))",
    )
    return rows


async def wait_for_summary(page: Page) -> str:
    summary = page.locator("[data-testid=summary]")
    await summary.wait_for(state="visible")
    return await summary.inner_text()


def reason_name(reason: quote_pb2.FailureReason.ValueType) -> str:
    return quote_pb2.FailureReason.Name(reason).removeprefix("FAILURE_REASON_")


@LANGS_AND_EDGES
async def test_offers_stream_in_one_at_a_time_with_statuses_countdown_and_summary(
    stack: Stack, browser: Browser, lang: str
) -> None:
    requests: list[str] = []
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang], requests=requests)
    await record(page)
    # The form is all catalogue text, in the page's language, and passes axe.
    assert await assert_texts_from_catalogue(page, lang) > 100
    await assert_accessible(page, f"the form ({lang})")
    await submit_preset(page, "moscow-young-driver")
    request_id = request_id_of(page)
    # Focus went to the results' heading, for a screen reader to go on from there.
    assert await page.evaluate("document.activeElement.id") == "session-title"

    # While the first offers are in, the slower insurers show as pending / working, with words.
    await page.wait_for_selector("[data-testid=offer]")
    early = await statuses(page)
    waiting = [s for s in early if s["state"] in ("pending", "accepted")]
    assert waiting, early
    assert all(s["detail"].strip() and s["badge"].strip() for s in waiting), waiting
    countdown = await page.inner_text("[data-testid=countdown]")
    assert re.fullmatch(r"Осталось \d+ с" if lang == "ru" else r"\d+ s left", countdown), countdown
    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"the streaming page ({lang})")

    await wait_for_summary(page)
    snapshot = await stack.snapshot(page, request_id)
    assert snapshot.status != 1  # SESSION_STATUS_RUNNING: finished
    # The session had the configured limit (it ends by its deadline: test_session, test_mesh).
    assert (snapshot.deadline.ToDatetime() - snapshot.created_at.ToDatetime()).total_seconds() == SESSION_LIMIT_S

    # Every offer of the session, once, cheapest first, priced exactly from the int64 kopecks in
    # the page's format, valid until a moment in Moscow time.
    rows = await offers(page)
    assert sorted(r["id"] for r in rows) == sorted(q.insurer_id for q in snapshot.quotes)
    assert len(rows) >= 3, rows
    kopecks = [int(r["kopecks"]) for r in rows]
    assert kopecks == sorted(kopecks)
    by_insurer = {q.insurer_id: q for q in snapshot.quotes}
    for row in rows:
        quote = by_insurer[row["id"]]
        assert int(row["kopecks"]) == quote.premium_kopecks
        assert spaces(row["price"]) == money(quote.premium_kopecks, lang)
        assert spaces(row["valid"]) == valid_until(quote.valid_until.ToDatetime().replace(tzinfo=UTC), lang)

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

    # Every insurer without an offer says why, in the page's language.
    final = await statuses(page)
    assert sorted(s["id"] for s in final) == sorted(i.insurer_id for i in snapshot.insurers)
    failures = {f.insurer_id: reason_name(f.reason) for f in snapshot.failures}
    failed = [s for s in final if s["state"] == "failed"]
    assert failed, final
    for row in failed:
        reason = failures[row["id"]]
        assert row["reason"] == reason
        assert row["detail"] == REASONS[lang][reason], row
    assert {s["id"] for s in final if s["state"] == "offer"} == set(by_insurer)
    assert not [s for s in final if s["state"] in ("pending", "accepted")]
    no_answer = [s for s in final if s["state"] == "noAnswer"]
    assert all(s["badge"] == BADGES[lang]["noAnswer"] for s in no_answer)

    # The summary, computed from the events: what happened, never "everyone answered" when some
    # did not; the bar shows the time used.
    expected = expected_summary(
        lang, asked=len(snapshot.insurers), offers=len(rows), reasons=list(failures.values()), no_answer=len(no_answer)
    )
    assert await summary_of(page) == expected
    text = await wait_for_summary(page)
    assert "Ответили все страховщики" not in text and "Every insurer answered" not in text
    finished = await page.inner_text("[data-testid=countdown]")
    assert re.fullmatch(r"Завершено за \d+,\d с" if lang == "ru" else r"Finished after \d+\.\d s", finished), finished
    assert int(await page.get_attribute("[data-testid=progress]", "value") or 0) > 0

    # The screen reader heard a count now and then, not a line per offer, and at the end the result.
    announced = await page.evaluate("window.__announced")
    final_words = "Поиск завершён" if lang == "ru" else "Search finished"
    assert announced and spaces(announced[-1]["text"]) == f"{final_words}. {expected.title}.", announced
    counts = announced[:-1]
    assert len(counts) < len(rows), announced
    assert all(b["t"] - a["t"] >= 3_900 for a, b in itertools.pairwise(counts)), announced

    # The breakdown opens on demand with the Bank of Russia coefficients.
    first = page.locator("[data-testid=offer]").first
    breakdown = first.locator("details")
    assert not await breakdown.get_attribute("open")
    await first.locator("summary").click()
    terms = await first.locator("dt abbr").all_inner_texts()
    assert terms[:7] == ["ТБ", "КТ", "КБМ", "КВС", "КО", "КМ", "КС"]

    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"the finished page ({lang})")

    # Nothing but the page's own origin was ever called (grpc-web included).
    origin = "{0.scheme}://{0.netloc}/".format(urlparse(stack.page_url))
    assert requests and all(url.startswith(origin) for url in requests), requests
    assert any("/osago.v1.AggregatorService/StreamQuoteEvents" in url for url in requests)
    await screenshot(page, f"finished-{lang}.png")


VIN_MESSAGE = {
    "ru": "VIN состоит из 17 символов: цифры и латинские буквы, кроме I, O, Q.",
    "en": "A VIN has 17 characters: digits and Latin letters except I, O, Q.",
}
LICENCE_MESSAGE = {
    "ru": "10 цифр или 2 цифры, 2 буквы и 6 цифр.",
    "en": "10 digits, or 2 digits, 2 letters and 6 digits.",
}
FIX_TWO_FIELDS = {"ru": "Исправьте 2 поля.", "en": "Please correct 2 fields."}


@LANGS_AND_EDGES
async def test_invalid_vin_and_licence_show_messages_on_their_fields(stack: Stack, browser: Browser, lang: str) -> None:
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang])
    await page.click("[data-testid=preset-kazan-two-drivers]")
    await page.fill('[data-field="application.vehicle.vin"]', "Z94G2813BMR12345")  # 16 characters
    await page.fill('[data-field="application.drivers[1].licence_number"]', "12AB")
    await page.click("[data-testid=submit]")

    # The server's field violations, in the page's language, on their fields.
    vin_error = page.locator('[data-error-for="application.vehicle.vin"]')
    await vin_error.wait_for(state="visible")
    assert await vin_error.inner_text() == VIN_MESSAGE[lang]
    vin = page.locator('[data-field="application.vehicle.vin"]')
    assert await vin.get_attribute("aria-invalid") == "true"
    # The message is part of the field's description: a screen reader reads it with the field.
    described_by = (await vin.get_attribute("aria-describedby") or "").split()
    assert await vin_error.get_attribute("id") in described_by
    licence_error = page.locator('[data-error-for="application.drivers[1].licence_number"]')
    assert await licence_error.inner_text() == LICENCE_MESSAGE[lang]
    assert not (await page.inner_text('[data-error-for="application.drivers[0].licence_number"]')).strip()
    # The form's alert counts the fields; the field with the first violation has the focus.
    assert await page.inner_text("[data-testid=form-errors]") == FIX_TWO_FIELDS[lang]
    assert await page.get_attribute("[data-testid=form-errors]", "role") == "alert"
    assert await page.evaluate("document.activeElement.dataset.field") == "application.vehicle.vin"
    assert "request=" not in page.url
    assert await page.locator("[data-testid=session]").is_hidden()
    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"the form with errors ({lang})")
    await page.locator("#vehicle-fields").screenshot(path=str(screenshot_path(f"invalid-vin-{lang}.png")))

    # Correcting the field retires its message; the fixed application goes through.
    await page.fill('[data-field="application.vehicle.vin"]', "Z94G2813BMR123456")
    assert not (await vin_error.inner_text()).strip()
    assert await vin.get_attribute("aria-invalid") is None
    await page.fill('[data-field="application.drivers[1].licence_number"]', "1629730416")
    await page.click("[data-testid=submit]")
    await page.wait_for_url(re.compile(r"[?&]request="))
    await wait_for_summary(page)


async def test_every_field_violation_of_the_server_has_its_own_russian_message(stack: Stack, browser: Browser) -> None:
    """Applications wrong in many ways: each violation the server reports is shown on its field
    as its own message, none as the page's generic fallback (a server wording the page no
    longer recognises would show up here). Two rounds: some checks need others to pass first."""
    page = await open_page(browser, stack.page_url)

    async def submit(wrong: dict[str, str]) -> dict[str, str]:
        await page.click("[data-testid=preset-kazan-two-drivers]")
        for field, value in wrong.items():
            await page.fill(f'[data-field="{field}"]', value)
        await page.click("[data-testid=submit]")
        await page.locator("[data-testid=form-errors]").wait_for(state="visible")
        shown: dict[str, str] = await page.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.error-item')]"
            ".map(e => [e.closest('[data-error-for]').dataset.errorFor, e.textContent]))"
        )
        assert [field for field, message in shown.items() if message == "Проверьте это поле."] == [], shown
        await assert_texts_from_catalogue(page, "ru")
        return {field: spaces(message) for field, message in shown.items()}

    first = await submit(
        {
            "application.vehicle.vin": "Z94G2813BMR12345",
            "application.vehicle.plate": "12345",
            "application.vehicle.power_hp": "9999",
            "application.vehicle.make": "",
            "application.vehicle.registration_document.series": "X",
            "application.vehicle.registration_document.number": "12",
            "application.vehicle.registration_document.issue_date": "1990-01-01",
            "application.owner.name.first_name": "R2-D2",
            "application.owner.birth_date": "2999-01-01",
            "application.drivers[0].licence_number": "1629730416",  # the same as driver 2's
            "application.drivers[1].birth_date": "2015-01-01",  # licensed in 2008
        }
    )
    assert first == {
        "application.vehicle.vin": "VIN состоит из 17 символов: цифры и латинские буквы, кроме I, O, Q.",
        "application.vehicle.plate": "Буква, 3 цифры, 2 буквы и код региона из 2–3 цифр (например, А123ВС77);"
        " буквы только А, В, Е, К, М, Н, О, Р, С, Т, У, Х.",
        "application.vehicle.power_hp": "От 1 до 1 500 л. с.",
        "application.vehicle.make": "Заполните это поле.",
        "application.vehicle.registration_document.series": "2 цифры, затем 2 цифры или 2 буквы.",
        "application.vehicle.registration_document.number": "Номер — 6 цифр.",
        "application.vehicle.registration_document.issue_date": (
            "Документ не может быть выдан раньше года выпуска автомобиля."
        ),
        "application.owner.name.first_name": "Только буквы (кириллица или латиница), пробелы, дефисы и апострофы.",
        "application.owner.birth_date": "Дата не может быть в будущем.",
        "application.drivers[1].licence_number": "Этот номер уже указан у водителя 1.",
        "application.drivers[1].birth_date": "Водителю должно исполниться 16 лет к началу полиса.",
        "application.drivers[1].licence_issue_date": "Удостоверение не может быть выдано раньше, чем водителю"
        " исполнилось 16.",
    }

    second = await submit(
        {
            "application.vehicle.year": "1800",
            "application.vehicle.body_number": "!!",
            "application.policy_start_date": "2001-01-01",
        }
    )
    assert second == {
        "application.vehicle.year": "Год выпуска — от 1900 до текущего.",
        "application.vehicle.body_number": "От 3 до 30 букв, цифр или дефисов.",
        "application.policy_start_date": "Дата начала не может быть в прошлом.",
    }


async def test_keyboard_alone_fills_in_submits_and_reaches_the_results(stack: Stack, browser: Browser) -> None:
    """No mouse: Tab to an example, Enter, type into a field, Tab to the submit button, Enter;
    every stop on the way shows a visible focus ring."""
    page = await open_page(browser, stack.page_url)
    focus = """() => {
      const el = document.activeElement;
      const style = getComputedStyle(el);
      return {testid: el.dataset.testid || "", field: el.dataset.field || "", id: el.id,
              ring: style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 2};
    }"""

    async def tab_to(wanted: dict[str, str], limit: int) -> int:
        for presses in range(1, limit + 1):
            await page.keyboard.press("Tab")
            now = await page.evaluate(focus)
            assert now["ring"], f"no visible focus on {now}"
            if all(now[k] == v for k, v in wanted.items()):
                return presses
        raise AssertionError(f"{wanted} not reached in {limit} presses of Tab")

    await tab_to({"testid": "preset-moscow-young-driver"}, 10)
    await page.keyboard.press("Enter")
    await tab_to({"field": "application.vehicle.plate"}, 10)
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Т789МН116")
    await tab_to({"testid": "submit"}, 80)
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"[?&]request="))
    assert await page.evaluate("document.activeElement.id") == "session-title"
    await wait_for_summary(page)
    # The language switch answers the keyboard too.
    await page.focus("[data-testid=lang-en]")
    await page.keyboard.press("Enter")
    await assert_texts_from_catalogue(page, "en")
    assert await page.evaluate("document.activeElement.dataset.testid") == "lang-en"


async def test_reload_mid_session_resumes_without_duplicate_rows(stack: Stack, browser: Browser) -> None:
    page = await open_page(browser, stack.page_url)
    await submit_preset(page, "kazan-two-drivers")
    request_id = request_id_of(page)
    await wait_for(page, "document.querySelectorAll('[data-testid=offer]').length >= 2")
    before = [r["id"] for r in await offers(page)]
    assert await page.locator("[data-testid=summary]").is_hidden(), "the session ended before the reload"

    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await record(page)
    assert request_id_of(page) == request_id
    await wait_for_summary(page)

    rows = [r["id"] for r in await offers(page)]
    snapshot = await stack.snapshot(page, request_id)
    assert len(rows) == len(set(rows)), rows
    assert set(before) <= set(rows)
    assert sorted(rows) == sorted(q.insurer_id for q in snapshot.quotes)
    assert len(rows) == len(snapshot.quotes)
    ids = [s["id"] for s in await statuses(page)]
    assert len(ids) == len(set(ids)) == len(snapshot.insurers)


async def test_the_same_application_again_is_answered_from_the_cache_and_fresh_prices_on_request(
    stack: Stack, browser: Browser
) -> None:
    page = await open_page(browser, stack.page_url)
    await submit_preset(page, "kazan-two-drivers")
    first_id = request_id_of(page)
    await wait_for_summary(page)
    first = await stack.snapshot(page, first_id)
    assert first.quotes and not any(q.from_cache for q in first.quotes)
    assert await page.locator("[data-testid=ask-fresh]").is_hidden()

    # The same application again: every offer of the first session at once, marked as cached.
    await page.click("[data-testid=submit]")
    await wait_for(page, f"!location.search.includes({first_id!r})")
    second_id = request_id_of(page)
    await wait_for_summary(page)
    second = await stack.snapshot(page, second_id)
    cached = {q.insurer_id: q.premium_kopecks for q in second.quotes if q.from_cache}
    assert cached == {q.insurer_id: q.premium_kopecks for q in first.quotes}
    notes = await page.locator("[data-testid=offer-from-cache]").all_inner_texts()
    assert notes == ["Из кэша: цена рассчитана недавно по такой же заявке."] * len(cached)

    # Fresh prices on request: every insurer asked again, nothing from the cache.
    await page.click("[data-testid=ask-fresh]")
    await wait_for(page, f"!location.search.includes({second_id!r})")
    await wait_for_summary(page)
    fresh = await stack.snapshot(page, request_id_of(page))
    assert not any(q.from_cache for q in fresh.quotes)
    assert await page.locator("[data-testid=offer-from-cache]").count() == 0


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
        await wait_for(page, "window.__connection.includes('reconnecting')")
        await wait_for_summary(page)
        assert await page.evaluate("window.__connection.includes('live')")
    finally:
        await link.stop()

    rows = [r["id"] for r in await offers(page)]
    snapshot = await stack.snapshot(page, request_id)
    assert len(rows) == len(set(rows)), rows
    assert sorted(rows) == sorted(q.insurer_id for q in snapshot.quotes)
    arrivals = [a["id"] for a in await page.evaluate("window.__offers")]
    assert sorted(arrivals) == sorted(rows)  # each row was added once, never re-added
    ids = [s["id"] for s in await statuses(page)]
    assert len(ids) == len(set(ids)) == len(snapshot.insurers)


@pytest.mark.parametrize("lang", LANGS)
async def test_phone_width_has_no_horizontal_scrolling(stack: Stack, browser: Browser, lang: str) -> None:
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang], width=375, height=812)
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
    await assert_texts_from_catalogue(page, lang)
    await screenshot(page, f"finished-375px-{lang}.png")


async def test_a_link_to_a_request_opened_elsewhere_shows_it_cannot_be_shown_there(
    stack: Stack, browser: Browser
) -> None:
    page = await open_page(browser, stack.page_url)
    await submit_preset(page, "kazan-two-drivers")
    request_id = request_id_of(page)
    await wait_for_summary(page)
    # The same link in another browser (its own storage): no access token, so nothing of the
    # request is shown, only that it cannot be shown here.
    elsewhere = await open_page(browser, f"{stack.page_url}?request={request_id}")
    await wait_for(elsewhere, "document.querySelector('[data-testid=session]').dataset.state === 'failed'")
    summary = await elsewhere.locator("[data-testid=summary]").inner_text()
    assert "только во вкладке" in summary
    assert await elsewhere.locator("[data-testid=offer]").count() == 0
