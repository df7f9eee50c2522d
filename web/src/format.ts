// Formatting for the page: money, coefficients, times. No Intl number formatting for money: the
// premium is an int64 (a bigint here) and must never pass through a float.

const THIN_NBSP = "\u202f"; // groups digits: 12 345
const NBSP = "\u00a0"; // keeps "₽" on the amount's line

/** 1234567n kopecks → "12 345,67 ₽" (exact, any size). */
export function formatRoubles(kopecks: bigint): string {
  const negative = kopecks < 0n;
  const abs = negative ? -kopecks : kopecks;
  const roubles = (abs / 100n).toString().replace(/\B(?=(\d{3})+(?!\d))/g, THIN_NBSP);
  const rest = (abs % 100n).toString().padStart(2, "0");
  return `${negative ? "−" : ""}${roubles},${rest}${NBSP}₽`;
}

/** A coefficient (a double on the wire) with at most 4 decimals: 1.8, 0.91, 2.32. */
export function formatCoefficient(value: number): string {
  if (!Number.isFinite(value)) return "—";
  return String(Math.round(value * 10_000) / 10_000);
}

/** Seconds left, for the countdown: "42 s" or "1 min 05 s". */
export function formatSecondsLeft(ms: number): string {
  const total = Math.max(0, Math.ceil(ms / 1000));
  if (total < 60) return `${total} s`;
  const minutes = Math.floor(total / 60);
  return `${minutes} min ${String(total % 60).padStart(2, "0")} s`;
}

/** A duration with one decimal: "8.2 s". */
export function formatElapsed(ms: number): string {
  return `${(Math.max(0, ms) / 1000).toFixed(1)} s`;
}

/** A moment for people: "12 Mar 2026, 14:05" in the browser's time zone. */
export function formatMoment(ms: number): string {
  const date = new Date(ms);
  if (Number.isNaN(date.getTime())) return "";
  return date.toLocaleString("en-GB", {
    day: "numeric",
    month: "short",
    year: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
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
