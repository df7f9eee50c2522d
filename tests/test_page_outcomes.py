"""Every outcome the page can meet, in Russian and in English, in a real Chromium: the page served by
the real web_bridge behind the real Envoy (grpc-web), talking to a stand-in aggregator — a real
gRPC server on a localhost port that plays a scripted event log. The real mesh cannot be made to
produce each failure reason, a busy answer with google.rpc.RetryInfo, or a stream that stays open
at a chosen point on demand; the script can, so each outcome is checked exactly, and axe-core
checks the page while the stream is held open.

Expected texts are written out in tests/browser_kit.py and here, not taken from the catalogues.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from osago.v1 import aggregator_service_pb2 as pb
from osago.v1 import aggregator_service_pb2_grpc, events_pb2, quote_pb2
from playwright.async_api import Browser, Page

from aggregator.servicer import CreateContext, StreamContext
from osago_mesh.envoy import render_envoy_config, start_envoy
from tests.browser_kit import (
    BADGES,
    LOCALES,
    OUTCOME_OF,
    REASONS,
    assert_accessible,
    assert_texts_from_catalogue,
    chromium,
    expected_summary,
    money,
    open_page,
    screenshot,
    spaces,
    summary_of,
    valid_until,
    wait_for,
)
from tests.conftest import serve_app
from web_bridge.app import make_app
from web_bridge.settings import BridgeSettings

pytestmark = pytest.mark.functional

LANGS = ["ru", "en"]
VALID_UNTIL = datetime(2026, 12, 2, 9, 5, tzinfo=UTC)  # 12:05 in Moscow
# Six offers (cheapest 6 219,50 ₽; one over a million roubles), ten insurers without an offer, one
# insurer that never answers.
OFFERS = [
    ("alfa", "АльфаСтрахование", 621_950),
    ("ingos", "Ингосстрах", 1_000_000),
    ("reso", "РЕСО-Гарантия", 734_512),
    ("vsk", "ВСК", 123_456_789),
    ("sogaz", "СОГАЗ", 700_000),
    ("ren", "Ренессанс", 899_900),
]
FAILURES = [
    ("soglasie", "Согласие", "DECLINED"),
    ("zetta", "Зетта", "UNAVAILABLE"),
    ("maks", "МАКС", "CIRCUIT_OPEN"),
    ("tins", "Т-Страхование", "RATE_LIMITED"),
    ("ugoria", "Югория", "BAD_RESPONSE"),
    ("absolut", "Абсолют", "INSURER_ERROR"),
    ("sber", "Сбербанк страхование", "INTERNAL"),
    ("energo", "Энергогарант", "TIMEOUT"),
    ("rosgos", "Росгосстрах", "DEADLINE"),
    ("pari", "ПАРИ", "CANCELLED"),
]
SILENT = ("gelios", "Гелиос")
# What the server says in English for API users; the page must not show it.
SERVER_SAYS = "the insurer is overloaded right now"


def timestamp(moment: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class Script:
    """A session's event log as the aggregator would write it: seq 1, 2, …, each stamped now;
    `hold()` marks where the stream stops until the test releases it."""

    def __init__(self) -> None:
        self.items: list[events_pb2.QuoteEvent | None] = []
        self.now = datetime.now(UTC)

    def _add(self, **payload: Any) -> None:
        seq = sum(1 for item in self.items if item is not None) + 1
        self.items.append(events_pb2.QuoteEvent(seq=seq, time=timestamp(datetime.now(UTC)), **payload))

    def started(self, insurers: list[tuple[str, str]]) -> Script:
        refs = [quote_pb2.InsurerRef(insurer_id=i, insurer_name=n) for i, n in insurers]
        deadline = timestamp(self.now + timedelta(seconds=60))
        self._add(session_started=events_pb2.SessionStarted(insurers=refs, deadline=deadline))
        return self

    def accepted(self, insurer_id: str, name: str) -> Script:
        state = events_pb2.INSURER_PROGRESS_STATE_ACCEPTED
        self._add(insurer_progress=events_pb2.InsurerProgress(insurer_id=insurer_id, insurer_name=name, state=state))
        return self

    def offer(self, insurer_id: str, name: str, kopecks: int) -> Script:
        quote = quote_pb2.Quote(
            insurer_id=insurer_id,
            insurer_name=name,
            offer_id=f"{insurer_id}-1",
            premium_kopecks=kopecks,
            currency="RUB",
            valid_until=timestamp(VALID_UNTIL),
            purchase_url=f"https://{insurer_id}.example/buy",
            breakdown=quote_pb2.CoefficientBreakdown(
                base_rate_kopecks=430_500,
                kt=1.8,
                kbm=0.63,
                kvs=0.91,
                ko=1.0,
                km=1.4,
                ks=1.0,
                kn=1.0,
                kp=1.0,
            ),
        )
        self._add(quote_received=events_pb2.QuoteReceived(quote=quote))
        return self

    def failed(self, insurer_id: str, name: str, reason: str) -> Script:
        failure = events_pb2.InsurerFailed(
            insurer_id=insurer_id,
            insurer_name=name,
            message=SERVER_SAYS,
            reason=quote_pb2.FailureReason.Value(f"FAILURE_REASON_{reason}"),
        )
        self._add(insurer_failed=failure)
        return self

    def hold(self) -> Script:
        self.items.append(None)
        return self

    def finished(self, status: str, asked: int, offers: int, failed: int) -> Script:
        self._add(
            session_finished=events_pb2.SessionFinished(
                status=events_pb2.SessionStatus.Value(f"SESSION_STATUS_{status}"),
                insurers_asked=asked,
                quotes_received=offers,
                insurers_failed=failed,
                message="Every insurer answered.",  # the server's words: the page makes its own summary
            )
        )
        return self


@dataclass
class ScriptedAggregator(aggregator_service_pb2_grpc.AggregatorServiceServicer):
    """Creates one request (`request_id`) or refuses with `reject`; streams `script`."""

    request_id: str = "scripted-1"
    script: Script = field(default_factory=Script)
    reject: grpc.Status | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
    creates: int = 0

    async def CreateQuoteRequest(
        self, request: pb.CreateQuoteRequestRequest, context: CreateContext
    ) -> pb.CreateQuoteRequestResponse:
        self.creates += 1
        if self.reject is not None:
            await context.abort_with_status(self.reject)
        running = events_pb2.SESSION_STATUS_RUNNING
        return pb.CreateQuoteRequestResponse(quote_request=pb.QuoteRequest(request_id=self.request_id, status=running))

    async def StreamQuoteEvents(
        self, request: pb.StreamQuoteEventsRequest, context: StreamContext
    ) -> AsyncIterator[pb.StreamQuoteEventsResponse]:
        if request.request_id != self.request_id:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such quote request")
        for item in self.script.items:
            if item is None:
                await self.release.wait()
            elif item.seq > request.after_seq:
                yield pb.StreamQuoteEventsResponse(event=item)


@dataclass
class Stack:
    aggregator: ScriptedAggregator
    page_url: str


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    """The stand-in aggregator, web_bridge serving the page, Envoy in front of both."""
    aggregator = ScriptedAggregator()
    server = grpc.aio.server()
    aggregator_service_pb2_grpc.add_AggregatorServiceServicer_to_server(aggregator, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        bridge = make_app(BridgeSettings(aggregator_target=f"127.0.0.1:{port}", port=0))
        async with serve_app(bridge) as bridge_url:
            config = render_envoy_config(
                listen_host="127.0.0.1",
                listen_port=0,
                aggregators=[("127.0.0.1", port)],
                web_bridge_host="127.0.0.1",
                web_bridge_port=int(bridge_url.rsplit(":", 1)[1]),
                admin_port=0,
                allowed_origins=[],
                allowed_origin_regexes=[r"^http://127\.0\.0\.1:\d+$"],
            )
            async with await start_envoy(config, tmp_path / "envoy") as envoy:
                yield Stack(aggregator, f"http://127.0.0.1:{envoy.port}/")
    finally:
        aggregator.release.set()
        await server.stop(0)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


ANNOUNCEMENTS = """() => {
  window.__announced = [];
  const announcer = document.getElementById("announcer");
  new MutationObserver(() => {
    if (announcer.textContent) window.__announced.push({ text: announcer.textContent, t: performance.now() });
  }).observe(announcer, { childList: true, characterData: true, subtree: true });
}"""


async def submit(page: Page) -> None:
    await page.click("[data-testid=preset-moscow-young-driver]")
    await page.click("[data-testid=submit]")


async def rows(page: Page) -> dict[str, dict[str, str]]:
    found: list[dict[str, str]] = await page.eval_on_selector_all(
        "[data-testid=insurer-status]",
        "rows => rows.map(r => ({id: r.dataset.insurerId, state: r.dataset.state, reason: r.dataset.reason || '',"
        " badge: r.querySelector('.insurer-state').textContent,"
        " detail: r.querySelector('.insurer-detail').textContent}))",
    )
    return {row["id"]: row for row in found}


def main_script() -> Script:
    everyone = [(i, n) for i, n, _ in OFFERS] + [(i, n) for i, n, _ in FAILURES] + [SILENT]
    script = Script().started(everyone)
    for insurer_id, name, _ in FAILURES[:3]:
        script.accepted(insurer_id, name)
    for insurer_id, name, kopecks in OFFERS:
        script.offer(insurer_id, name, kopecks)
    script.hold()
    for insurer_id, name, reason in FAILURES:
        script.failed(insurer_id, name, reason)
    return script.finished("COMPLETED", asked=len(everyone), offers=len(OFFERS), failed=len(FAILURES))


ANNOUNCED_SIX = {"ru": "Пришло 6 предложений, лучшая цена 6 219,50 ₽", "en": "6 offers so far, best price ₽6,219.50"}
FINISHED = {"ru": "Поиск завершён. Найдено 6 предложений.", "en": "Search finished. 6 offers found."}


@pytest.mark.parametrize("lang", LANGS)
async def test_every_outcome_is_explained_and_the_summary_names_what_happened(
    stack: Stack, browser: Browser, lang: str
) -> None:
    stack.aggregator.script = main_script()
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang])
    await page.evaluate(ANNOUNCEMENTS)
    await submit(page)

    # Streaming, held after the six offers: cheapest first, exact money in the page's format.
    await wait_for(page, "document.querySelectorAll('[data-testid=offer]').length === 6")
    prices = [spaces(p) for p in await page.locator("[data-testid=offer-price]").all_inner_texts()]
    assert prices == [money(k, lang) for k in sorted(k for _, _, k in OFFERS)]
    assert prices[-1] == ("1 234 567,89 ₽" if lang == "ru" else "₽1,234,567.89")
    valid = await page.locator("[data-testid=offer-valid-until]").first.inner_text()
    assert spaces(valid) == valid_until(VALID_UNTIL, lang)
    assert valid == (
        "Действует до 2 декабря 2026, 12:05 по Москве"
        if lang == "ru"
        else "Valid until 2 December 2026, 12:05 Moscow time"
    )
    waiting = [r for r in (await rows(page)).values() if r["state"] in ("pending", "accepted")]
    assert len(waiting) == len(FAILURES) + 1
    assert await page.locator("[data-testid=summary]").is_hidden()

    # The screen reader hears the count and best price, not six lines: at most two announcements,
    # seconds apart, the last with all six offers.
    await wait_for(
        page,
        "(want) => (window.__announced.at(-1) || {}).text?.replace(/[\\u00a0\\u202f]/g, ' ') === want",
        arg=ANNOUNCED_SIX[lang],
    )
    announced = await page.evaluate("window.__announced")
    assert 1 <= len(announced) <= 2, announced
    if len(announced) == 2:
        assert announced[1]["t"] - announced[0]["t"] >= 3_900, announced
    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"the streaming page, held ({lang})")
    await screenshot(page, f"streaming-{lang}.png")

    stack.aggregator.release.set()
    summary = await summary_of(page)

    # Each insurer without an offer: why, in the page's words (never the server's English).
    shown = await rows(page)
    for insurer_id, _, reason in FAILURES:
        row = shown[insurer_id]
        assert (row["state"], row["reason"]) == ("failed", reason)
        assert row["detail"] == REASONS[lang][reason]
        assert row["badge"] == BADGES[lang][OUTCOME_OF.get(reason, "unavailable")]
    silent = shown[SILENT[0]]
    assert (silent["state"], silent["badge"]) == ("noAnswer", BADGES[lang]["noAnswer"])
    for insurer_id, _, _ in OFFERS:
        assert (shown[insurer_id]["state"], shown[insurer_id]["badge"]) == ("offer", BADGES[lang]["offer"])

    # The summary, from the events: six offers, one decline, six unavailable, two timed out, one
    # cancelled, one without an answer — not the server's "Every insurer answered."
    expected = expected_summary(lang, asked=17, offers=6, reasons=[reason for _, _, reason in FAILURES], no_answer=1)
    assert summary == expected
    if lang == "ru":
        assert summary.counts == [
            "6 предложений",
            "1 отказ",
            "6 страховщиков недоступны",
            "2 не успели ответить",
            "1 запрос отменён",
            "1 страховщик не ответил",
        ]
        assert summary.asked == "Опрошено 17 страховщиков"
    else:
        assert summary.counts == [
            "6 offers",
            "1 declined",
            "6 insurers unavailable",
            "2 timed out",
            "1 cancelled",
            "1 insurer did not answer",
        ]
    assert await page.locator("[data-testid=summary-note]").count() == 0
    body = await page.inner_text("body")
    assert "Every insurer answered" not in body and "Ответили все" not in body and SERVER_SAYS not in body
    best = spaces(await page.inner_text(".summary-best"))
    assert best == (
        "Лучшая цена: 6 219,50 ₽ — АльфаСтрахование" if lang == "ru" else "Best price: ₽6,219.50 from АльфаСтрахование"
    )
    assert await page.get_attribute("[data-testid=summary]", "data-tone") == "warn"
    announced = await page.evaluate("window.__announced")
    assert spaces(announced[-1]["text"]) == FINISHED[lang]

    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"the finished page, every outcome ({lang})")
    await screenshot(page, f"outcomes-{lang}.png")


async def test_switching_language_mid_session_rerenders_everything_in_place(stack: Stack, browser: Browser) -> None:
    stack.aggregator.script = main_script()
    page = await open_page(browser, stack.page_url, locale="ru-RU")
    await submit(page)
    await wait_for(page, "document.querySelectorAll('[data-testid=offer]').length === 6")
    first_price = page.locator("[data-testid=offer-price]").first

    await page.click("[data-testid=lang-en]")
    await assert_texts_from_catalogue(page, "en")
    assert spaces(await first_price.inner_text()) == "₽6,219.50"
    assert await page.get_attribute("[data-testid=lang-en]", "aria-pressed") == "true"
    assert await page.get_attribute("[data-testid=lang-ru]", "aria-pressed") == "false"
    assert await page.title() == "OSAGO quotes — every insurer at once"

    stack.aggregator.release.set()
    summary = await summary_of(page)  # arrives while in English: rendered in English
    assert summary.title == "6 offers found"

    await page.click("[data-testid=lang-ru]")
    await assert_texts_from_catalogue(page, "ru")
    assert (await summary_of(page)).title == "Найдено 6 предложений"
    assert spaces(await first_price.inner_text()) == "6 219,50 ₽"
    assert await page.title() == "ОСАГО: цены всех страховых компаний сразу"


@pytest.mark.parametrize("locale", ["ru-RU", "en-US", "de-DE"])
async def test_the_page_speaks_russian_until_english_is_chosen_whatever_the_browsers_language(
    stack: Stack, browser: Browser, locale: str
) -> None:
    context = await browser.new_context(locale=locale)
    page = await context.new_page()
    await page.goto(stack.page_url)
    await page.wait_for_selector("html[data-ready=true]")
    assert await page.get_attribute("html", "lang") == "ru"
    await assert_texts_from_catalogue(page, "ru")
    await page.click("[data-testid=lang-en]")
    await assert_texts_from_catalogue(page, "en")
    await context.close()


async def test_the_chosen_language_is_remembered(stack: Stack, browser: Browser) -> None:
    page = await open_page(browser, stack.page_url, locale="ru-RU")
    await assert_texts_from_catalogue(page, "ru")
    await page.click("[data-testid=lang-en]")
    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await assert_texts_from_catalogue(page, "en")
    await page.click("[data-testid=lang-ru]")
    await page.reload()
    await page.wait_for_selector("html[data-ready=true]")
    await assert_texts_from_catalogue(page, "ru")


@pytest.mark.parametrize("lang", LANGS)
async def test_one_offer_everyone_answered_and_an_outage_with_none(stack: Stack, browser: Browser, lang: str) -> None:
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang])

    # One offer and one refusal: every insurer did answer, and the page says so.
    stack.aggregator.request_id = "scripted-one"
    stack.aggregator.script = (
        Script()
        .started([("alfa", "АльфаСтрахование"), ("soglasie", "Согласие")])
        .offer("alfa", "АльфаСтрахование", 621_950)
        .failed("soglasie", "Согласие", "DECLINED")
        .finished("COMPLETED", asked=2, offers=1, failed=1)
    )
    await submit(page)
    summary = await summary_of(page)
    assert summary == expected_summary(lang, asked=2, offers=1, reasons=["DECLINED"])
    assert (summary.title, summary.asked, summary.counts) == (
        ("Найдено 1 предложение", "Опрошено 2 страховщика", ["1 предложение", "1 отказ"])
        if lang == "ru"
        else ("1 offer found", "2 insurers asked", ["1 offer", "1 declined"])
    )
    assert await page.inner_text("[data-testid=summary-note]") == (
        "Ответили все страховщики." if lang == "ru" else "Every insurer answered."
    )
    assert await page.get_attribute("[data-testid=summary]", "data-tone") == "ok"

    # An outage: nobody could be reached; no offers, and the page says to try later.
    await page.click("#new-quote")
    stack.aggregator.request_id = "scripted-outage"
    insurers = [("zetta", "Зетта"), ("maks", "МАКС"), ("ugoria", "Югория")]
    script = Script().started(insurers)
    for insurer_id, name in insurers:
        script.failed(insurer_id, name, "UNAVAILABLE")
    stack.aggregator.script = script.finished("UPSTREAM_OUTAGE", asked=3, offers=0, failed=3)
    await submit(page)
    await page.wait_for_url("**/?request=scripted-outage")
    summary = await summary_of(page)
    assert summary == expected_summary(lang, asked=3, offers=0, reasons=["UNAVAILABLE"] * 3)
    assert (summary.title, summary.counts) == (
        ("Предложений нет", ["0 предложений", "3 страховщика недоступны"])
        if lang == "ru"
        else ("No offers", ["0 offers", "3 insurers unavailable"])
    )
    assert await page.inner_text("[data-testid=summary-note]") == (
        "Страховщики сейчас недоступны. Попробуйте позже."
        if lang == "ru"
        else "The insurers cannot be reached just now. Please try again later."
    )
    assert await page.inner_text("#offers-empty") == (
        "Ни один страховщик не сделал предложения." if lang == "ru" else "No insurer made an offer."
    )
    assert await page.get_attribute("[data-testid=summary]", "data-tone") == "bad"
    await assert_texts_from_catalogue(page, lang)
    await assert_accessible(page, f"an outage ({lang})")


def busy(retry_s: int | None) -> grpc.Status:
    details = []
    if retry_s is not None:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=retry_s)))
        details.append(detail)
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="busy, try again later", details=details)
    converted: grpc.Status = rpc_status.to_status(status)  # grpcio-status is untyped
    return converted


BUSY = {
    "ru": {
        7: "Сервис сейчас перегружен. Попробуйте ещё раз через 7 секунд.",
        1: "Сервис сейчас перегружен. Попробуйте ещё раз через 1 секунду.",
        3: "Сервис сейчас перегружен. Попробуйте ещё раз через 3 секунды.",
        None: "Сервис сейчас перегружен. Попробуйте ещё раз чуть позже.",
    },
    "en": {
        7: "We are busy just now; please try again in 7 seconds.",
        1: "We are busy just now; please try again in 1 second.",
        3: "We are busy just now; please try again in 3 seconds.",
        None: "We are busy just now; please try again in a moment.",
    },
}


@pytest.mark.parametrize("lang", LANGS)
async def test_busy_unreachable_and_unknown_violations_are_explained(stack: Stack, browser: Browser, lang: str) -> None:
    page = await open_page(browser, stack.page_url, locale=LOCALES[lang])
    alert = page.locator("[data-testid=form-errors]")

    # Busy (RESOURCE_EXHAUSTED at creation): how long to wait, from RetryInfo when the server sends it.
    for retry_s in (7, 1, 3, None):
        stack.aggregator.reject = busy(retry_s)
        await submit(page)
        await wait_for(
            page,
            "(want) => document.querySelector('[data-testid=form-errors]').textContent === want",
            arg=BUSY[lang][retry_s],
        )
        assert await page.evaluate("document.activeElement.dataset.testid") == "form-errors"
        assert await page.locator("[data-testid=session]").is_hidden()
    await assert_accessible(page, f"the busy message ({lang})")

    # A violation the page does not know: a generic message in the page's language on its field;
    # one on a field the form does not have: listed in the alert.
    bad_request = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="application.vehicle.vin", description="must be purple"),
            error_details_pb2.BadRequest.FieldViolation(field="application.vehicle.colour", description="is required"),
        ]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    stack.aggregator.reject = rpc_status.to_status(
        status_pb2.Status(
            code=code_pb2.INVALID_ARGUMENT, message="invalid request: 2 field violation(s)", details=[detail]
        )
    )
    await submit(page)
    vin_error = page.locator('[data-error-for="application.vehicle.vin"]')
    await vin_error.wait_for(state="visible")
    assert await vin_error.inner_text() == ("Проверьте это поле." if lang == "ru" else "Please check this field.")
    assert await alert.locator("p").inner_text() == (
        "Исправьте 2 поля." if lang == "ru" else "Please correct 2 fields."
    )
    assert await alert.locator("li").all_inner_texts() == [
        "vehicle.colour: Заполните это поле." if lang == "ru" else "vehicle.colour: This field is required."
    ]
    assert await page.evaluate("document.activeElement.dataset.field") == "application.vehicle.vin"
    await assert_texts_from_catalogue(page, lang)

    # Unreachable: after its retries, the page says so.
    stack.aggregator.reject = rpc_status.to_status(status_pb2.Status(code=code_pb2.UNAVAILABLE, message="down"))
    await submit(page)
    await wait_for(
        page,
        "(want) => document.querySelector('[data-testid=form-errors]').textContent === want",
        arg="Сервис расчёта сейчас недоступен. Попробуйте ещё раз."
        if lang == "ru"
        else "The quote service cannot be reached just now; please try again.",
    )
    assert stack.aggregator.creates >= 4 + 1 + 3  # busy ×4, invalid ×1, then at least 3 tries


@pytest.mark.parametrize("lang", LANGS)
async def test_an_unknown_request_in_the_link_is_explained(stack: Stack, browser: Browser, lang: str) -> None:
    page = await open_page(browser, f"{stack.page_url}?request=gone", locale=LOCALES[lang])
    summary = page.locator("[data-testid=summary]")
    await summary.wait_for(state="visible")
    assert [await summary.locator("h3").inner_text(), await summary.locator("p").inner_text()] == (
        ["Не удалось показать эту заявку", "Заявка не найдена или устарела. Заполните заявку заново."]
        if lang == "ru"
        else [
            "Cannot show this request",
            "This quote request is unknown or has expired. Please fill in the application again.",
        ]
    )
    await assert_texts_from_catalogue(page, lang)
