"""The page's two message catalogues (web/src/i18n/ru.ts, en.ts) agree, and no text of the page is
written anywhere else: not in index.html, not in the scripts of web/src.

The scripts are scanned for what would put text on the page without the catalogue: a string with
Cyrillic letters or words in it, and the DOM calls that write text or human-read attributes
(outside i18n/ and dom.ts, which render the catalogue's messages). TypeScript adds its part: an
element's children cannot be strings, and en.ts must have exactly ru.ts's keys. The browser tests
check the page as rendered (tests/browser_kit.py: assert_texts_from_catalogue).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.browser_kit import PLURAL_CATEGORIES, catalogue, forms, placeholders
from tests.conftest import ROOT

WEB_SRC = ROOT / "web" / "src"
INDEX_HTML = ROOT / "web_bridge" / "static" / "index.html"
HUMAN_ATTRS = ("aria-label", "title", "alt", "placeholder")


def test_both_catalogues_have_the_same_keys() -> None:
    ru, en = catalogue("ru"), catalogue("en")
    assert len(ru) > 100
    assert sorted(set(ru) - set(en)) == []
    assert sorted(set(en) - set(ru)) == []


def test_every_message_has_the_same_placeholders_and_shape_in_both_languages() -> None:
    ru, en = catalogue("ru"), catalogue("en")
    problems = []
    for key in ru:
        if isinstance(ru[key], str) != isinstance(en[key], str):
            problems.append(f"{key}: a text in one language, plural forms in the other")
        names = {lang: [placeholders(form) for form in forms(c[key])] for lang, c in (("ru", ru), ("en", en))}
        if len({frozenset(n) for n in names["ru"] + names["en"]}) != 1:
            problems.append(f"{key}: placeholders differ {names}")
        if not all(form.strip() for form in forms(ru[key]) + forms(en[key])):
            problems.append(f"{key}: an empty message")
    assert problems == []


@pytest.mark.parametrize("lang", ["ru", "en"])
def test_plural_messages_give_exactly_the_forms_of_their_language(lang: str) -> None:
    plurals = {key: message for key, message in catalogue(lang).items() if isinstance(message, dict)}
    assert len(plurals) >= 10
    wrong = {key: sorted(m) for key, m in plurals.items() if set(m) != PLURAL_CATEGORIES[lang]}
    assert wrong == {}
    # The number is what picks the form: every form shows it.
    assert [key for key, m in plurals.items() if not all("{n}" in form for form in m.values())] == []


class _PageTexts(HTMLParser):
    """Text and human-read attributes of an HTML page written outside the catalogue."""

    VOID = frozenset(
        {"meta", "link", "input", "br", "img", "hr", "source", "area", "base", "col", "embed", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str | None]]] = []
        self.problems: list[str] = []
        self.keys: list[str] = []
        self.lang: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "html":
            self.lang = found.get("lang")
        self.keys += [value for name, value in attrs if name.startswith("data-i18n") and value]
        for attr in HUMAN_ATTRS:
            if attr in found and f"data-i18n-{attr}" not in found:
                self.problems.append(f"<{tag} {attr}={found[attr]!r}> is written in the HTML")
        if tag not in self.VOID:
            self.stack.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not data.strip() or any(tag in ("noscript", "script", "style") for tag, _ in self.stack):
            return
        where = self.stack[-1][0] if self.stack else "document"
        self.problems.append(f"text in <{where}> is written in the HTML: {data.strip()!r}")


def page_texts(html: str) -> _PageTexts:
    parser = _PageTexts()
    parser.feed(html)
    parser.close()
    return parser


def test_index_html_has_no_text_of_its_own_and_names_only_known_messages() -> None:
    page = page_texts(INDEX_HTML.read_text(encoding="utf-8"))
    assert page.lang == "ru"
    assert page.problems == []
    assert len(page.keys) >= 15
    assert sorted(set(page.keys) - set(catalogue("ru"))) == []


def test_the_html_check_finds_written_text() -> None:
    page = page_texts(
        '<html lang="ru"><body><h1 data-i18n="page.heading"></h1><p>Hello</p>'
        '<progress aria-label="Time used"></progress><noscript>JavaScript</noscript></body></html>'
    )
    assert page.problems == [
        "text in <p> is written in the HTML: 'Hello'",
        "<progress aria-label='Time used'> is written in the HTML",
    ]


# What may put text on the page directly: allowed only in i18n/ and dom.ts, which render messages.
_DOM_TEXT = re.compile(
    r"\.(?:textContent|innerText|innerHTML|outerHTML|nodeValue)\s*=(?!=)"
    r"|\b(?:insertAdjacentHTML|insertAdjacentText|createTextNode|document\.write)\b"
    r"|\bdocument\.title\s*="
    r"|\bsetAttribute\(\s*[\"'`](?:aria-label|title|alt|placeholder)[\"'`]"
    r"|[\"']?\b(?:aria-label|title|alt|placeholder)[\"']?\s*:"
    r"|\.(?:append|prepend|replaceChildren|before|after|replaceWith)\(\s*[\"'`]"
)
_CYRILLIC = re.compile(r"[А-Яа-яЁё]")
# Two words in a row: "Get quotes", "not accepted". Ids, keys, selectors and paths have no spaces.
_WORDS = re.compile(r"[A-Za-z]{2,}[ \t]+[A-Za-z]{2,}")
# A string right after these is not shown to anyone.
_NOT_SHOWN_AFTER = re.compile(r"(?:\bclass\s*:|\brel\s*:|\bnew Error\()\s*$")
# Marks a line whose strings are data the page matches against, never shows (reason required).
_DATA_MARK = re.compile(r"//\s*not text: \S")


def _literals(source: str) -> list[tuple[int, str, str]]:
    """The string and template literals of a TypeScript source, each with its line number and the
    code before it on its line; comments and regex literals are skipped, `${…}` left out."""
    out: list[tuple[int, str, str]] = []
    i, line, n = 0, 1, len(source)
    last = ""  # the last significant character of code, to tell a regex from a division
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
        elif source.startswith("//", i):
            i = source.find("\n", i) if "\n" in source[i:] else n
        elif source.startswith("/*", i):
            end = source.find("*/", i + 2)
            line += source.count("\n", i, end)
            i = end + 2
        elif c in "\"'`":
            j, parts = i + 1, []
            while j < n and source[j] != c:
                if source[j] == "\\":
                    parts.append(source[j : j + 2])
                    j += 2
                elif c == "`" and source.startswith("${", j):
                    depth, j = 1, j + 2
                    while j < n and depth:
                        depth += {"{": 1, "}": -1}.get(source[j], 0)
                        j += 1
                    parts.append(" ")
                else:
                    parts.append(source[j])
                    j += 1
            start_of_line = source.rfind("\n", 0, i) + 1
            out.append((line, "".join(parts), source[start_of_line:i]))
            line += source.count("\n", i, j)
            i, last = j + 1, c
        elif c == "/" and last in "(,=:[!&|?{};+-*%<>~^":
            j, in_class = i + 1, False
            while j < n and (in_class or source[j] != "/"):
                if source[j] == "\\":
                    j += 1
                elif source[j] == "[":
                    in_class = True
                elif source[j] == "]":
                    in_class = False
                j += 1
            i, last = j + 1, "/"
        else:
            if not c.isspace():
                last = c
            i += 1
    return out


def hard_coded_texts(source: str, keys: set[str], *, renders_messages: bool = False) -> list[str]:
    """What in `source` (a TypeScript module) looks like text of the page not taken from the
    catalogue; `keys` are the catalogue's keys (a key is never text)."""
    found = []
    lines = source.splitlines()
    for number, literal, before in _literals(source):
        code_line = lines[number - 1] if number <= len(lines) else ""
        if literal in keys or _NOT_SHOWN_AFTER.search(before) or _DATA_MARK.search(code_line):
            continue
        if _CYRILLIC.search(literal) or _WORDS.search(literal):
            found.append(f"line {number}: {literal!r}")
    if not renders_messages:
        for number, code_line in enumerate(lines, 1):
            if _DOM_TEXT.search(code_line.split("//", 1)[0]):
                found.append(f"line {number}: writes text to the page: {code_line.strip()}")
    return found


def scripts() -> list[Path]:
    return sorted(path for path in WEB_SRC.rglob("*.ts") if path.relative_to(WEB_SRC).parts[0] not in ("gen", "i18n"))


def test_the_page_scripts_write_no_text_of_their_own() -> None:
    keys = set(catalogue("ru"))
    files = scripts()
    assert {p.name for p in files} >= {"main.ts", "form.ts", "view.ts", "violations.ts", "dom.ts"}
    found = {
        str(path.relative_to(ROOT)): hard_coded_texts(
            path.read_text(encoding="utf-8"), keys, renders_messages=path.name == "dom.ts"
        )
        for path in files
    }
    assert {path: texts for path, texts in found.items() if texts} == {}


def test_the_script_scan_finds_hard_coded_text() -> None:
    keys = {"form.submit"}
    source = "\n".join(
        [
            'const a = h("p", {}, msg("form.submit"));',  # a key: fine
            'el.querySelector("[data-field=vin]");',  # a selector: fine
            'throw new Error("the page has no form");',  # for developers: fine
            'const b = h("div", { class: "field field-check" });',  # classes: fine
            "const re = /^must be 17 characters/;",  # a regex matching the server's words: fine
            'const c = "Get quotes";',
            "const d = 'Получить';",
            "const e = `Осталось ${left} с`;",
            "submit.textContent = label;",
            'el.setAttribute("aria-label", label);',
            'const f = h("progress", { "aria-label": label });',
            'el.append("Offer");',
            'const g = ["saint petersburg"]; // not text: spellings matched, never shown',
        ]
    )
    assert hard_coded_texts(source, keys) == [
        "line 6: 'Get quotes'",
        "line 7: 'Получить'",
        "line 8: 'Осталось   с'",
        "line 9: writes text to the page: submit.textContent = label;",
        'line 10: writes text to the page: el.setAttribute("aria-label", label);',
        'line 11: writes text to the page: const f = h("progress", { "aria-label": label });',
        'line 12: writes text to the page: el.append("Offer");',
    ]
