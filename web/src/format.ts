// Formatting for the page's locale (i18n/index.ts picks the locale): money, numbers, dates and
// times of day. Dates and times are Moscow time, the time OSAGO policies are written in, whatever
// the browser's time zone. Money is an int64 of kopecks (a bigint here) and never passes through a
// float: Intl.NumberFormat formats the exact decimal string.

export const MOSCOW = "Europe/Moscow";

const cache = new Map<string, Intl.NumberFormat | Intl.DateTimeFormat>();

function cached<T extends Intl.NumberFormat | Intl.DateTimeFormat>(id: string, make: () => T): T {
  let format = cache.get(id);
  if (!format) {
    format = make();
    cache.set(id, format);
  }
  return format as T;
}

/** Kopecks as a decimal string ("621950") → roubles with two decimals ("6219.50"), exactly. */
export function kopecksToDecimal(kopecks: string): string {
  const value = BigInt(kopecks);
  const negative = value < 0n;
  const abs = negative ? -value : value;
  return `${negative ? "-" : ""}${abs / 100n}.${(abs % 100n).toString().padStart(2, "0")}`;
}

/** "621950" → "6 219,50 ₽" (ru-RU), "₽6,219.50" (en-GB); exact for any int64. */
export function formatMoney(kopecks: string, locale: string): string {
  const format = cached(`money:${locale}`, () =>
    new Intl.NumberFormat(locale, { style: "currency", currency: "RUB", currencyDisplay: "narrowSymbol" }));
  // A decimal string is formatted exactly (Intl.NumberFormat v3); the lib types know only numbers.
  return format.format(kopecksToDecimal(kopecks) as unknown as number);
}

/** A number with at most 4 decimals: 1 234; 1,8 (ru) or 1.8 (en). */
export function formatNumber(value: number, locale: string): string {
  if (!Number.isFinite(value)) return "—";
  return cached(`number:${locale}`, () => new Intl.NumberFormat(locale, { maximumFractionDigits: 4 })).format(value);
}

/** A number with exactly one decimal: 8,2 (ru) or 8.2 (en). */
export function formatTenths(value: number, locale: string): string {
  return cached(`tenths:${locale}`, () =>
    new Intl.NumberFormat(locale, { minimumFractionDigits: 1, maximumFractionDigits: 1 })).format(value);
}

/** A calendar day in Moscow: "2 декабря 2026", "2 December 2026" (no trailing "г."). */
export function formatDate(ms: number, locale: string): string {
  const format = cached(`date:${locale}`, () =>
    new Intl.DateTimeFormat(locale, { day: "numeric", month: "long", year: "numeric", timeZone: MOSCOW }));
  const parts = format.formatToParts(new Date(ms));
  while (parts.length > 0 && parts[parts.length - 1].type === "literal") parts.pop();
  return parts.map((part) => part.value).join("");
}

/** A time of day in Moscow, 24-hour: "12:05". */
export function formatClock(ms: number, locale: string): string {
  return cached(`clock:${locale}`, () =>
    new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", hourCycle: "h23", timeZone: MOSCOW }))
    .format(new Date(ms));
}

/** Only http(s) links are ever put in an href: an offer's URL comes from an insurer. */
export function safeHttpUrl(raw: string): string | null {
  if (!raw) return null;
  try {
    const url = new URL(raw);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}
