"""What the browser tests share: Debian's Chromium driven by Playwright, a page opened in a given
browser language, the page's message catalogues (web/src/i18n/*.ts) read as data, axe-core
(axe-playwright-python, which bundles axe.min.js) and the check that every text on the page is a
message of the catalogue in the page's language.

Expected texts in the tests are written out in full, in Russian and English, independently of
the catalogues; the catalogues are only used to check that nothing on the page came from
elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ROOT

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
I18N = ROOT / "web" / "src" / "i18n"
# Generous for a loaded CI machine.
WAIT_MS = 30_000
# The browser's language in each of the page's languages' runs (the page starts in Russian anyway).
LOCALES = {"ru": "ru-RU", "en": "en-GB"}
# The plural forms each language has for whole numbers (CLDR), which its catalogue must give.
PLURAL_CATEGORIES = {"ru": {"one", "few", "many", "other"}, "en": {"one", "other"}}


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert CHROMIUM.is_file(), "Debian's chromium is required: apt-get install -y chromium"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_page(
    browser: Browser,
    url: str,
    *,
    locale: str = "ru-RU",
    width: int = 1280,
    height: int = 900,
    requests: list[str] | None = None,
) -> Page:
    """A fresh browser context (its own storage) whose language is `locale`, on `url`, once the
    page's script has run; `requests` collects the URL of every request the page makes. The page
    starts in Russian whatever the browser's language; for an English locale the customer
    switches it to English, as a user would."""
    context = await browser.new_context(viewport={"width": width, "height": height}, locale=locale)
    page = await context.new_page()
    page.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    if requests is not None:
        page.on("request", lambda request: requests.append(request.url))
    await page.goto(url)
    await page.wait_for_selector("html[data-ready=true]")
    assert await page.get_attribute("html", "lang") == "ru"
    if locale.startswith("en"):
        await page.click("[data-testid=lang-en]")
        await page.wait_for_selector("html[lang=en]")
    assert not errors, errors
    return page


async def wait_for(page: Page, expression: str, arg: object = None, timeout_s: float = 30.0) -> None:
    """Waits until `expression` (a JS expression, or a function of `arg`) is truthy in the page.
    Polled from here with page.evaluate: Playwright's wait_for_function evaluates its predicate
    with eval inside the page, which the page's Content-Security-Policy forbids."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await page.evaluate(expression, arg):
        if loop.time() > deadline:
            raise AssertionError(f"never true within {timeout_s:g} s: {expression}")
        await asyncio.sleep(0.05)


def screenshot_path(name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / name


async def screenshot(page: Page, name: str) -> Path:
    path = screenshot_path(name)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def spaces(text: str) -> str:
    """Intl puts no-break spaces (U+00A0, U+202F) in numbers and before "₽"; compare as spaces."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def ru_plural(n: int, one: str, few: str, many: str) -> str:
    """The Russian plural rule for whole numbers (CLDR): 1, 21 → one; 2–4, 22 → few; else many."""
    if n % 10 == 1 and n % 100 != 11:
        return one
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return few
    return many


def money(kopecks: int, lang: str) -> str:
    """6 219,50 ₽ (ru) or ₽6,219.50 (en), with plain spaces (see `spaces`)."""
    whole = f"{kopecks // 100:,}"
    cents = f"{kopecks % 100:02d}"
    if lang == "ru":
        return f"{whole.replace(',', ' ')},{cents} ₽"
    return f"₽{whole}.{cents}"


_OBJECT = re.compile(r"^export const \w+(?:: \w+)? = (\{$.*?^\})", re.MULTILINE | re.DOTALL)


def catalogue(lang: str) -> dict[str, str | dict[str, str]]:
    """web/src/i18n/<lang>.ts: its one object literal, kept strict JSON for this reader."""
    source = (I18N / f"{lang}.ts").read_text(encoding="utf-8")
    found = _OBJECT.search(source)
    assert found, f"{lang}.ts has no `export const … = {{ … }}` object"
    data: dict[str, str | dict[str, str]] = json.loads(found.group(1))
    return data


def forms(message: str | dict[str, str]) -> list[str]:
    return [message] if isinstance(message, str) else list(message.values())


def placeholders(template: str) -> set[str]:
    return set(re.findall(r"\{(\w+)\}", template))


def template_pattern(template: str) -> re.Pattern[str]:
    """A template as a regex: its text literally, each {placeholder} as some text."""
    parts = re.split(r"\{\w+\}", template)
    return re.compile("(?s)" + ".+?".join(re.escape(part) for part in parts))


# Every non-blank text node and every human-read attribute of the document, with the message key
# of the element that holds it (or null). The page's texts are all set through i18n/index.ts,
# which marks the element; anything else is text written in code or HTML.
_TEXTS = """() => {
  const out = [];
  const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (!node.textContent.trim()) continue;
    const el = node.parentElement;
    if (el.closest("noscript, script, style")) continue;
    out.push({kind: "text", key: el.getAttribute("data-i18n"), text: el.textContent,
              only: el.childNodes.length === 1, tag: el.tagName});
  }
  for (const attr of ["aria-label", "title", "alt", "placeholder"]) {
    for (const el of document.querySelectorAll(`[${attr}]`)) {
      out.push({kind: attr, key: el.getAttribute(`data-i18n-${attr}`), text: el.getAttribute(attr),
                only: true, tag: el.tagName});
    }
  }
  return out;
}"""


async def assert_texts_from_catalogue(page: Page, lang: str) -> int:
    """Every text on the page (visible or hidden) is a message of `lang`'s catalogue held by the
    element that shows it, and <html lang> is `lang`. Returns how many texts were checked."""
    assert await page.get_attribute("html", "lang") == lang
    messages = catalogue(lang)
    problems: list[str] = []
    texts: list[dict[str, Any]] = await page.evaluate(_TEXTS)
    for item in texts:
        key, shown = item["key"], item["text"]
        if key is None:
            problems.append(f"{item['kind']} of <{item['tag']}> is not from the catalogue: {shown!r}")
        elif key not in messages:
            problems.append(f"unknown key {key!r}: {shown!r}")
        elif not item["only"]:
            problems.append(f"<{item['tag']} data-i18n={key!r}> holds more than its message: {shown!r}")
        elif not any(template_pattern(form).fullmatch(shown) for form in forms(messages[key])):
            problems.append(f"{key!r} is not {lang}: {shown!r}")
    assert not problems, "\n".join(problems)
    return len(texts)


async def assert_accessible(page: Page, where: str) -> None:
    """axe-core on the page as it is now: no serious or critical violation."""
    results = await Axe().run(page)
    violations = results.response["violations"]
    serious = [v for v in violations if v["impact"] in ("serious", "critical")]
    report = "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:5]}" for v in violations
    )
    print(f"axe on {where}: {len(violations)} violation(s)\n{report}")
    assert not serious, f"axe on {where}:\n{report}"


# What the page must say, written out here rather than taken from the catalogues.

# Why an insurer gave no offer (FailureReason without its prefix), as the page explains it.
REASONS = {
    "ru": {
        "TIMEOUT": "Не ответил вовремя.",
        "DEADLINE": "Не успел сделать предложение до конца поиска.",
        "UNAVAILABLE": "Сервис страховщика недоступен.",
        "DECLINED": "Страховщик отказался страховать по этой заявке.",
        "RATE_LIMITED": "Страховщик сейчас перегружен запросами.",
        "CIRCUIT_OPEN": "Временно не опрашивается после повторных сбоев.",
        "BAD_RESPONSE": "Прислал ответ, который не удалось прочитать.",
        "INSURER_ERROR": "Сообщил об ошибке на своей стороне.",
        "INTERNAL": "Ошибка на нашей стороне.",
        "CANCELLED": "Запрос отменён.",
    },
    "en": {
        "TIMEOUT": "Did not answer in time.",
        "DEADLINE": "No offer before the time limit.",
        "UNAVAILABLE": "The insurer's service could not be reached.",
        "DECLINED": "The insurer declined this application.",
        "RATE_LIMITED": "The insurer has too many requests right now.",
        "CIRCUIT_OPEN": "Temporarily not asked after repeated failures.",
        "BAD_RESPONSE": "Answered something we could not read.",
        "INSURER_ERROR": "Reported an error on its side.",
        "INTERNAL": "An error on our side.",
        "CANCELLED": "The request was cancelled.",
    },
}
# How the summary counts each reason: declined, timed out, cancelled; every other is "unavailable".
OUTCOME_OF = {"DECLINED": "declined", "TIMEOUT": "timed_out", "DEADLINE": "timed_out", "CANCELLED": "cancelled"}
# The badge of an insurer row, by state or outcome.
BADGES = {
    "ru": {
        "offer": "Предложение",
        "declined": "Отказ",
        "unavailable": "Недоступен",
        "timed_out": "Не успел",
        "cancelled": "Отменено",
        "noAnswer": "Нет ответа",
    },
    "en": {
        "offer": "Offer",
        "declined": "Declined",
        "unavailable": "Unavailable",
        "timed_out": "Timed out",
        "cancelled": "Cancelled",
        "noAnswer": "No answer",
    },
}
RU_MONTHS = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
]
EN_MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]


def valid_until(moment: datetime, lang: str) -> str:
    """ "Действует до 2 декабря 2026, 12:05 по Москве": the date and time in Moscow."""
    local = moment.astimezone(ZoneInfo("Europe/Moscow"))
    clock = f"{local.hour:02d}:{local.minute:02d}"
    if lang == "ru":
        return f"Действует до {local.day} {RU_MONTHS[local.month - 1]} {local.year}, {clock} по Москве"
    return f"Valid until {local.day} {EN_MONTHS[local.month - 1]} {local.year}, {clock} Moscow time"


@dataclass(frozen=True)
class Summary:
    title: str
    asked: str
    counts: list[str]


def expected_summary(lang: str, *, asked: int, offers: int, reasons: list[str], no_answer: int = 0) -> Summary:
    """The summary's title, the insurers asked and the counts it lists (offers always, the rest
    when not zero), for `reasons` (one FailureReason name per insurer without an offer)."""
    grouped = {"declined": 0, "unavailable": 0, "timed_out": 0, "cancelled": 0}
    for reason in reasons:
        grouped[OUTCOME_OF.get(reason, "unavailable")] += 1
    if lang == "ru":

        def p(n: int, one: str, few: str, many: str) -> str:
            return ru_plural(n, one, few, many).format(n=n)

        title = p(offers, "Найдено {n} предложение", "Найдено {n} предложения", "Найдено {n} предложений")
        lines = [
            (offers, p(offers, "{n} предложение", "{n} предложения", "{n} предложений")),
            (grouped["declined"], p(grouped["declined"], "{n} отказ", "{n} отказа", "{n} отказов")),
            (
                grouped["unavailable"],
                p(
                    grouped["unavailable"],
                    "{n} страховщик недоступен",
                    "{n} страховщика недоступны",
                    "{n} страховщиков недоступны",
                ),
            ),
            (
                grouped["timed_out"],
                p(grouped["timed_out"], "{n} не успел ответить", "{n} не успели ответить", "{n} не успели ответить"),
            ),
            (
                grouped["cancelled"],
                p(grouped["cancelled"], "{n} запрос отменён", "{n} запроса отменены", "{n} запросов отменены"),
            ),
            (
                no_answer,
                p(
                    no_answer,
                    "{n} страховщик не ответил",
                    "{n} страховщика не ответили",
                    "{n} страховщиков не ответили",
                ),
            ),
        ]
        return Summary(
            title if offers else "Предложений нет",
            p(asked, "Опрошен {n} страховщик", "Опрошено {n} страховщика", "Опрошено {n} страховщиков"),
            [line for i, (n, line) in enumerate(lines) if n or i == 0],
        )

    def e(n: int, one: str, other: str) -> str:
        return (one if n == 1 else other).format(n=n)

    lines = [
        (offers, e(offers, "{n} offer", "{n} offers")),
        (grouped["declined"], f"{grouped['declined']} declined"),
        (grouped["unavailable"], e(grouped["unavailable"], "{n} insurer unavailable", "{n} insurers unavailable")),
        (grouped["timed_out"], f"{grouped['timed_out']} timed out"),
        (grouped["cancelled"], f"{grouped['cancelled']} cancelled"),
        (no_answer, e(no_answer, "{n} insurer did not answer", "{n} insurers did not answer")),
    ]
    return Summary(
        e(offers, "{n} offer found", "{n} offers found") if offers else "No offers",
        e(asked, "{n} insurer asked", "{n} insurers asked"),
        [line for i, (n, line) in enumerate(lines) if n or i == 0],
    )


async def summary_of(page: Page) -> Summary:
    """The finished summary as shown (spaces normalised)."""
    summary = page.locator("[data-testid=summary]")
    await summary.wait_for(state="visible")
    return Summary(
        spaces(await summary.locator("[data-testid=summary-title]").inner_text()),
        spaces(await summary.locator("[data-testid=summary-asked]").inner_text()),
        [spaces(t) for t in await summary.locator(".summary-counts li").all_inner_texts()],
    )
