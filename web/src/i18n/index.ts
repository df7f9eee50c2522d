// The page's languages: Russian (the default) and English. Every text the page shows is a message
// of the catalogue (ru.ts, en.ts) rendered by this module, and every element showing one carries
// its key (data-i18n) and placeholder values (data-i18n-params, JSON): switching the language
// re-renders them all in place, whatever state the page is in, and a test can check that no text
// on the page came from anywhere else. Numbers, money, dates and times are formatted for the
// page's locale when rendered; dates and times of day are Moscow time, where OSAGO is regulated.

import { formatClock, formatDate, formatMoney, formatNumber, formatTenths } from "../format";
import type { Catalogue, Key } from "./catalogue";
import { en } from "./en";
import { ru } from "./ru";

export type { Key } from "./catalogue";

export type Lang = "ru" | "en";
export const LANGS: readonly Lang[] = ["ru", "en"];
export const DEFAULT_LANG: Lang = "ru";
const CATALOGUES: Readonly<Record<Lang, Catalogue>> = { ru, en };
const LOCALES: Readonly<Record<Lang, string>> = { ru: "ru-RU", en: "en-GB" };
const STORAGE_KEY = "osago.lang";

/** A message to show: its key and the values of its placeholders. */
export interface Msg {
  readonly key: Key;
  readonly params?: Params;
}

/** A placeholder's value; all of them survive JSON, so they can be kept on the element. */
export type Param =
  | string // shown as it is: a name from the server, a request id
  | number // a number in the page's locale (1 234; 1,8 in Russian)
  | { readonly money: string } // kopecks (an int64 as a decimal string): 6 219,50 ₽
  | { readonly date: number } // epoch ms: 2 декабря 2026 (Moscow)
  | { readonly clock: number } // epoch ms: 12:05 (Moscow)
  | { readonly tenths: number } // a number with one decimal: 8,2
  | { readonly join: readonly Msg[]; readonly sep: string } // messages joined by a separator
  | Msg; // another message

export type Params = Readonly<Record<string, Param>>;

export function msg(key: Key, params?: Params): Msg {
  return params === undefined ? { key } : { key, params };
}

let current: Lang = DEFAULT_LANG;
const listeners: ((lang: Lang) => void)[] = [];
const pluralRules = new Map<Lang, Intl.PluralRules>();

export function language(): Lang {
  return current;
}

export function locale(lang: Lang = current): string {
  return LOCALES[lang];
}

export function isLang(value: unknown): value is Lang {
  return typeof value === "string" && (LANGS as readonly string[]).includes(value);
}

/**
 * The language to start in: the one the customer chose before (kept in localStorage), else
 * Russian. The browser's language is not taken as a guess: OSAGO is bought by Russian drivers,
 * many of whom run browsers set to English (and a browser left at its default says en-US); the
 * switch to English is on every page.
 */
export function initialLanguage(): Lang {
  return storedLanguage() ?? DEFAULT_LANG;
}

function storedLanguage(): Lang | null {
  try {
    const value = window.localStorage.getItem(STORAGE_KEY);
    return isLang(value) ? value : null;
  } catch {
    return null; // storage disabled: Russian
  }
}

/** Switches the page to `lang`: <html lang>, every text on the page; `remember` keeps the choice. */
export function setLanguage(lang: Lang, remember = false): void {
  current = lang;
  document.documentElement.lang = lang;
  if (remember) {
    try {
      window.localStorage.setItem(STORAGE_KEY, lang);
    } catch {
      // storage disabled: the choice lasts for this page only
    }
  }
  relocalize(document);
  for (const listener of listeners) listener(lang);
}

export function onLanguageChange(listener: (lang: Lang) => void): void {
  listeners.push(listener);
}

/** The message in the page's language. */
export function text(message: Msg, lang: Lang = current): string {
  const entry = CATALOGUES[lang][message.key];
  let template: string;
  if (typeof entry === "string") {
    template = entry;
  } else {
    const n = message.params?.n;
    template = entry[plural(lang).select(typeof n === "number" ? n : Number.NaN)] ?? entry.other;
  }
  return template.replace(/\{(\w+)\}/g, (whole, name: string) => {
    const value = message.params?.[name];
    return value === undefined ? whole : formatParam(value, lang);
  });
}

function plural(lang: Lang): Intl.PluralRules {
  let rules = pluralRules.get(lang);
  if (!rules) {
    rules = new Intl.PluralRules(LOCALES[lang]);
    pluralRules.set(lang, rules);
  }
  return rules;
}

function formatParam(value: Param, lang: Lang): string {
  const loc = LOCALES[lang];
  if (typeof value === "string") return value;
  if (typeof value === "number") return formatNumber(value, loc);
  if ("key" in value) return text(value, lang);
  if ("money" in value) return formatMoney(value.money, loc);
  if ("date" in value) return formatDate(value.date, loc);
  if ("clock" in value) return formatClock(value.clock, loc);
  if ("tenths" in value) return formatTenths(value.tenths, loc);
  return value.join.map((part) => text(part, lang)).join(value.sep);
}

const KEY_ATTR = "data-i18n";
const PARAMS_ATTR = "data-i18n-params";
/** Attributes read by people (screen readers, tooltips); `data-i18n-<attr>` holds the key. */
const TEXT_ATTRS = ["aria-label", "title"] as const;

/** Makes `message` the whole text of `el`, kept up to date across language switches. */
export function show(el: Element, message: Msg): void {
  el.setAttribute(KEY_ATTR, message.key);
  if (message.params === undefined) el.removeAttribute(PARAMS_ATTR);
  else el.setAttribute(PARAMS_ATTR, JSON.stringify(message.params));
  el.textContent = text(message);
}

/** Empties `el` and forgets its message. */
export function clear(el: Element): void {
  el.removeAttribute(KEY_ATTR);
  el.removeAttribute(PARAMS_ATTR);
  el.replaceChildren();
}

/** Sets a human-read attribute (`aria-label`, `title`) of `el` to the message with key `key`. */
export function showAttr(el: Element, attr: (typeof TEXT_ATTRS)[number], key: Key): void {
  el.setAttribute(`data-i18n-${attr}`, key);
  el.setAttribute(attr, text(msg(key)));
}

/** Renders every message under `root` again, in the page's language. */
export function relocalize(root: ParentNode): void {
  const catalogue = CATALOGUES[current];
  for (const el of root.querySelectorAll(`[${KEY_ATTR}]`)) {
    const key = el.getAttribute(KEY_ATTR) ?? "";
    if (!(key in catalogue)) continue;
    const raw = el.getAttribute(PARAMS_ATTR);
    const params = raw ? (JSON.parse(raw) as Params) : undefined;
    el.textContent = text(msg(key as Key, params));
  }
  for (const attr of TEXT_ATTRS) {
    for (const el of root.querySelectorAll(`[data-i18n-${attr}]`)) {
      const key = el.getAttribute(`data-i18n-${attr}`) ?? "";
      if (key in catalogue) el.setAttribute(attr, text(msg(key as Key)));
    }
  }
}
