// The live view of one quote session, built from its events: offers sorted by price (cheapest
// first, each inserted as it arrives, one row per insurer whatever is replayed), per-insurer
// status with the reason for every insurer without an offer, a countdown and progress bar to the
// session deadline, and the summary at the end — computed here from the events, so it names what
// happened (offers, declines, insurers unavailable, timed out) in the page's language.
//
// Screen readers: the lists are not live regions (a row per offer would flood them); a polite
// announcer says how many offers there are and the best price, at most every few seconds, and
// once at the end what the search found.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { byId, h, replace } from "./dom";
import { safeHttpUrl } from "./format";
import { clear, msg, show, showAttr, type Key, type Msg } from "./i18n";
import type { ConnectionState } from "./stream";
import {
  InsurerProgressState,
  SessionStatus,
  SessionStatusSchema,
  type InsurerFailed,
  type QuoteEvent,
} from "./gen/osago/v1/events_pb";
import { FailureReason, FailureReasonSchema, type Quote } from "./gen/osago/v1/quote_pb";

/** What became of an insurer that gave no offer, as the summary counts it. */
type Outcome = "declined" | "unavailable" | "timedOut" | "cancelled";
type InsurerState = "pending" | "accepted" | "offer" | "failed" | "noAnswer";

interface InsurerRow {
  el: HTMLLIElement;
  name: string;
  state: InsurerState;
  outcome?: Outcome;
}

/** Each failure reason: its explanation and how the summary counts it. */
const REASONS: Readonly<Record<FailureReason, readonly [Key, Outcome]>> = {
  [FailureReason.UNSPECIFIED]: ["reason.UNSPECIFIED", "unavailable"],
  [FailureReason.TIMEOUT]: ["reason.TIMEOUT", "timedOut"],
  [FailureReason.DEADLINE]: ["reason.DEADLINE", "timedOut"],
  [FailureReason.UNAVAILABLE]: ["reason.UNAVAILABLE", "unavailable"],
  [FailureReason.DECLINED]: ["reason.DECLINED", "declined"],
  [FailureReason.RATE_LIMITED]: ["reason.RATE_LIMITED", "unavailable"],
  [FailureReason.CIRCUIT_OPEN]: ["reason.CIRCUIT_OPEN", "unavailable"],
  [FailureReason.BAD_RESPONSE]: ["reason.BAD_RESPONSE", "unavailable"],
  [FailureReason.INSURER_ERROR]: ["reason.INSURER_ERROR", "unavailable"],
  [FailureReason.INTERNAL]: ["reason.INTERNAL", "unavailable"],
  [FailureReason.CANCELLED]: ["reason.CANCELLED", "cancelled"],
};

const OUTCOME_LABEL: Readonly<Record<Outcome, Key>> = {
  declined: "insurer.declined",
  unavailable: "insurer.unavailable",
  timedOut: "insurer.timedOut",
  cancelled: "insurer.cancelled",
};

const STATE_LABEL: Readonly<Record<Exclude<InsurerState, "failed">, Key>> = {
  pending: "insurer.pending",
  accepted: "insurer.accepted",
  offer: "insurer.offer",
  noAnswer: "insurer.noAnswer",
};

/** The least time between two announcements of the offer count. */
const ANNOUNCE_EVERY_MS = 4_000;

function byPremium(a: { premium: bigint }, b: { premium: bigint }): number {
  return a.premium < b.premium ? -1 : a.premium > b.premium ? 1 : 0;
}

function money(kopecks: bigint): { money: string } {
  return { money: kopecks.toString() };
}

/** Time left, for the countdown: "42 с", "1 мин 05 с". */
function secondsLeft(ms: number): Msg {
  const total = Math.max(0, Math.ceil(ms / 1000));
  if (total < 60) return msg("time.seconds", { n: total });
  return msg("time.minutesSeconds", { m: Math.floor(total / 60), s: String(total % 60).padStart(2, "0") });
}

export class SessionView {
  readonly section = byId("session");
  private readonly heading = byId("session-title");
  private readonly requestLine = byId("session-request");
  private readonly connection = byId("connection");
  private readonly countdown = byId("countdown");
  private readonly progress = byId<HTMLProgressElement>("progress");
  private readonly offersList = byId<HTMLOListElement>("offers");
  private readonly offersEmpty = byId("offers-empty");
  private readonly insurersList = byId<HTMLUListElement>("insurers");
  private readonly summary = byId("summary");
  /** Shown once an offer came from the cache: the customer may have every insurer asked anew. */
  private readonly freshOffer = byId("fresh-offer");
  private readonly announcer = byId("announcer");

  private readonly insurers = new Map<string, InsurerRow>();
  private readonly offers = new Map<string, { el: HTMLLIElement; premium: bigint; quote: Quote }>();
  private startedAtServer: number | undefined;
  private deadlineServer: number | undefined;
  private finishedAtServer: number | undefined;
  /** Lower bound of (server clock − local clock): max over events of (event time − arrival time). */
  private serverOffset = Number.NEGATIVE_INFINITY;
  private timer: number | undefined;
  private announceTimer: number | undefined;
  private lastAnnounced = Number.NEGATIVE_INFINITY;

  /** Empties the view for request `requestId` and shows it. */
  reset(requestId: string): void {
    this.stopTimer();
    this.stopAnnouncing();
    this.insurers.clear();
    this.offers.clear();
    this.startedAtServer = this.deadlineServer = this.finishedAtServer = undefined;
    this.serverOffset = Number.NEGATIVE_INFINITY;
    this.offersList.replaceChildren();
    this.insurersList.replaceChildren();
    this.freshOffer.hidden = true;
    this.offersEmpty.hidden = false;
    show(this.offersEmpty, msg("session.noOffersYet"));
    this.summary.replaceChildren();
    this.summary.hidden = true;
    delete this.summary.dataset.status;
    delete this.summary.dataset.tone;
    clear(this.connection);
    clear(this.announcer);
    show(this.requestLine, msg("session.request", { id: requestId }));
    show(this.countdown, msg("countdown.starting"));
    this.progress.value = 0;
    this.section.dataset.state = "running";
    this.section.hidden = false;
    this.timer = window.setInterval(() => this.tick(), 250);
  }

  hide(): void {
    this.stopTimer();
    this.stopAnnouncing();
    this.section.hidden = true;
  }

  /** Moves focus and view to the session, for the customer who just submitted. */
  focus(): void {
    this.heading.focus();
    this.section.scrollIntoView({ block: "start" });
  }

  /** The deadline in local-clock milliseconds, when known. */
  deadlineLocalMs(): number | undefined {
    return this.deadlineServer === undefined ? undefined : this.deadlineServer - this.offset();
  }

  apply(event: QuoteEvent): void {
    if (event.time) {
      this.serverOffset = Math.max(this.serverOffset, timestampMs(event.time) - Date.now());
    }
    const payload = event.payload;
    switch (payload.case) {
      case "sessionStarted":
        if (event.time) this.startedAtServer = timestampMs(event.time);
        if (payload.value.deadline) this.deadlineServer = timestampMs(payload.value.deadline);
        for (const ref of payload.value.insurers) this.insurer(ref.insurerId, ref.insurerName);
        break;
      case "quoteReceived":
        if (payload.value.quote) this.addOffer(payload.value.quote);
        break;
      case "insurerProgress": {
        const row = this.insurer(payload.value.insurerId, payload.value.insurerName);
        if (row.state !== "pending" && row.state !== "accepted") break; // final states stay
        if (payload.value.state === InsurerProgressState.ACCEPTED) {
          this.setInsurer(row, "accepted", msg("insurer.acceptedDetail"));
        } else if (payload.value.state === InsurerProgressState.PENDING) {
          this.setInsurer(row, row.state, msg("insurer.stillComputing"));
        }
        break;
      }
      case "insurerFailed":
        this.failInsurer(payload.value);
        break;
      case "sessionFinished":
        if (event.time) this.finishedAtServer = timestampMs(event.time);
        this.finish(payload.value.status);
        break;
      default:
        break;
    }
    this.tick();
  }

  /** Connection state in words, for the status line. */
  setConnection(state: ConnectionState, retryInMs?: number): void {
    this.connection.dataset.state = state;
    if (state === "connecting") show(this.connection, msg("connection.connecting"));
    else if (state === "live") show(this.connection, msg("connection.live"));
    else if (state === "reconnecting") {
      show(this.connection, retryInMs === undefined
        ? msg("connection.reconnecting")
        : msg("connection.reconnectingIn", { n: Math.ceil(retryInMs / 1000) }));
    } else clear(this.connection);
  }

  /** A problem that ends following the session (unknown request, …). */
  showFatal(message: Msg): void {
    this.stopTimer();
    this.stopAnnouncing();
    this.section.dataset.state = "failed";
    clear(this.countdown);
    this.offersEmpty.hidden = this.offers.size > 0;
    replace(this.summary, h("h3", { id: "summary-title" }, msg("fatal.title")), h("p", {}, message));
    this.summary.hidden = false;
  }

  private offset(): number {
    return Number.isFinite(this.serverOffset) ? this.serverOffset : 0;
  }

  private tick(): void {
    if (this.deadlineServer === undefined) return;
    const start = this.startedAtServer ?? this.deadlineServer - 60_000;
    const total = Math.max(1, this.deadlineServer - start);
    if (this.finishedAtServer !== undefined) {
      const used = this.finishedAtServer - start;
      this.progress.value = Math.round(Math.min(1, used / total) * this.progress.max);
      show(this.countdown, msg("countdown.finished", {
        time: msg("time.seconds", { n: { tenths: Math.max(0, used) / 1000 } }),
      }));
      this.stopTimer();
      return;
    }
    const now = Date.now() + this.offset();
    const left = this.deadlineServer - now;
    this.progress.value = Math.round(Math.min(1, Math.max(0, (now - start) / total)) * this.progress.max);
    show(this.countdown, left > 0 ? msg("countdown.left", { time: secondsLeft(left) }) : msg("countdown.over"));
  }

  private stopTimer(): void {
    if (this.timer !== undefined) window.clearInterval(this.timer);
    this.timer = undefined;
  }

  private insurer(insurerId: string, name: string): InsurerRow {
    let row = this.insurers.get(insurerId);
    if (!row) {
      const el = h("li", { class: "insurer", "data-testid": "insurer-status", "data-insurer-id": insurerId },
        h("span", { class: "insurer-name" }), h("span", { class: "insurer-state" }), h("span", { class: "insurer-detail" }));
      row = { el, name: name || insurerId, state: "pending" };
      this.insurers.set(insurerId, row);
      this.insurersList.append(el);
      this.setInsurer(row, "pending", msg("insurer.pendingDetail"));
    } else if (name && row.name !== name) {
      row.name = name;
    }
    show(row.el.querySelector(".insurer-name") as HTMLElement, msg("value.text", { text: row.name }));
    return row;
  }

  private setInsurer(row: InsurerRow, state: InsurerState, detail: Msg, outcome?: Outcome): void {
    row.state = state;
    row.outcome = outcome;
    row.el.dataset.state = state;
    if (outcome) row.el.dataset.outcome = outcome;
    else delete row.el.dataset.outcome;
    const label = state === "failed" && outcome ? OUTCOME_LABEL[outcome] : STATE_LABEL[state as Exclude<InsurerState, "failed">];
    show(row.el.querySelector(".insurer-state") as HTMLElement, msg(label));
    show(row.el.querySelector(".insurer-detail") as HTMLElement, detail);
  }

  private failInsurer(failure: InsurerFailed): void {
    const row = this.insurer(failure.insurerId, failure.insurerName);
    if (row.state === "offer") return;
    const [key, outcome] = REASONS[failure.reason] ?? REASONS[FailureReason.UNSPECIFIED];
    const code = FailureReasonSchema.value[failure.reason]?.name ?? `FAILURE_REASON_${failure.reason}`;
    row.el.dataset.reason = code.replace(/^FAILURE_REASON_/, "");
    this.setInsurer(row, "failed", msg(key), outcome);
  }

  private addOffer(quote: Quote): void {
    const row = this.insurer(quote.insurerId, quote.insurerName);
    const premium = quote.premiumKopecks;
    delete row.el.dataset.reason;
    this.setInsurer(row, "offer", msg("value.money", { amount: money(premium) }));
    const existing = this.offers.get(quote.insurerId);
    if (existing) {
      // One row per insurer, ever: a repeated offer replaces the row in place.
      existing.el.remove();
      this.offers.delete(quote.insurerId);
    }
    const el = this.offerRow(quote);
    // Cheapest first; an equal price goes after those already shown.
    const next = [...this.offers.values()].filter((o) => o.premium > premium).sort(byPremium)[0];
    this.offersList.insertBefore(el, next ? next.el : null);
    this.offers.set(quote.insurerId, { el, premium, quote });
    this.offersEmpty.hidden = true;
    if (quote.fromCache) this.freshOffer.hidden = false;
    this.announceOffers();
  }

  private offerRow(quote: Quote): HTMLLIElement {
    const b = quote.breakdown;
    const coefficients: (readonly [code: Key, meaning: Key, value: Msg])[] = b
      ? [
          ["coef.tb", "coef.tb.meaning", msg("value.money", { amount: money(b.baseRateKopecks) })],
          ["coef.kt", "coef.kt.meaning", msg("value.number", { n: b.kt })],
          ["coef.kbm", "coef.kbm.meaning", msg("value.number", { n: b.kbm })],
          ["coef.kvs", "coef.kvs.meaning", msg("value.number", { n: b.kvs })],
          ["coef.ko", "coef.ko.meaning", msg("value.number", { n: b.ko })],
          ["coef.km", "coef.km.meaning", msg("value.number", { n: b.km })],
          ["coef.ks", "coef.ks.meaning", msg("value.number", { n: b.ks })],
          ...(b.kn && b.kn !== 1 ? [["coef.kn", "coef.kn.meaning", msg("value.number", { n: b.kn })] as const] : []),
          ...(b.kp && b.kp !== 1 ? [["coef.kp", "coef.kp.meaning", msg("value.number", { n: b.kp })] as const] : []),
        ]
      : [];
    const url = safeHttpUrl(quote.purchaseUrl);
    const name = quote.insurerName || quote.insurerId;
    const validUntil = quote.validUntil
      ? msg("offer.validUntil", { moment: msg("time.moment", { date: { date: timestampMs(quote.validUntil) }, time: { clock: timestampMs(quote.validUntil) } }) })
      : null;
    return h("li", { class: "offer", "data-testid": "offer", "data-insurer-id": quote.insurerId, "data-premium-kopecks": quote.premiumKopecks.toString() },
      h("div", { class: "offer-head" },
        h("span", { class: "offer-insurer" }, msg("value.text", { text: name })),
        h("span", { class: "offer-price", "data-testid": "offer-price" }, msg("value.money", { amount: money(quote.premiumKopecks) })),
      ),
      quote.fromCache ? h("p", { class: "offer-cached", "data-testid": "offer-from-cache" }, msg("offer.fromCache")) : null,
      validUntil || url
        ? h("p", { class: "offer-meta" },
            validUntil ? h("span", { "data-testid": "offer-valid-until" }, validUntil) : null,
            url
              ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" },
                  msg("offer.buy", { insurer: name }), h("span", { class: "visually-hidden" }, msg("offer.newTab")))
              : null)
        : null,
      coefficients.length > 0
        ? h("details", { class: "breakdown" },
            h("summary", {}, msg("offer.howPrice")),
            h("dl", {}, ...coefficients.flatMap(([code, meaning, value]) => {
              const abbr = h("abbr", {}, msg(code));
              showAttr(abbr, "title", meaning);
              return [h("dt", {}, abbr, h("span", { class: "meaning" }, msg(meaning))), h("dd", {}, value)];
            })),
            h("p", { class: "formula" }, msg("offer.formula", {
              terms: { join: coefficients.map(([code]) => msg(code)), sep: " × " },
              amount: money(quote.premiumKopecks),
            })),
          )
        : null,
    );
  }

  /** Says how many offers there are and the best price, at most every ANNOUNCE_EVERY_MS. */
  private announceOffers(): void {
    if (this.announceTimer !== undefined) return; // one is due; it will tell the latest count
    const wait = Math.max(0, this.lastAnnounced + ANNOUNCE_EVERY_MS - performance.now());
    this.announceTimer = window.setTimeout(() => {
      this.announceTimer = undefined;
      const best = [...this.offers.values()].sort(byPremium)[0];
      if (!best) return;
      this.lastAnnounced = performance.now();
      show(this.announcer, msg("announce.offers", { n: this.offers.size, amount: money(best.premium) }));
    }, wait);
  }

  private stopAnnouncing(): void {
    if (this.announceTimer !== undefined) window.clearTimeout(this.announceTimer);
    this.announceTimer = undefined;
    this.lastAnnounced = Number.NEGATIVE_INFINITY;
  }

  private finish(status: SessionStatus): void {
    this.section.dataset.state = "finished";
    show(this.offersEmpty, msg("session.noOffers"));
    this.offersEmpty.hidden = this.offers.size > 0;
    for (const row of this.insurers.values()) {
      if (row.state === "pending" || row.state === "accepted") this.setInsurer(row, "noAnswer", msg("insurer.noAnswerDetail"));
    }
    const rows = [...this.insurers.values()];
    const count = (outcome: Outcome) => rows.filter((r) => r.state === "failed" && r.outcome === outcome).length;
    const noAnswer = rows.filter((r) => r.state === "noAnswer").length;
    const declined = count("declined");
    const offers = this.offers.size;
    const counts: [Key, number][] = [
      ["count.offers", offers],
      ["count.declined", declined],
      ["count.unavailable", count("unavailable")],
      ["count.timedOut", count("timedOut")],
      ["count.cancelled", count("cancelled")],
      ["count.noAnswer", noAnswer],
    ];
    // "Every insurer answered" only when each one did: with an offer or a refusal of its own.
    const everyoneAnswered = rows.length > 0 && offers + declined === rows.length;
    const note: Key | null =
      status === SessionStatus.CANCELLED ? "summary.cancelled"
      : status === SessionStatus.UPSTREAM_OUTAGE ? "summary.outage"
      : status === SessionStatus.DEADLINE_EXCEEDED ? "summary.deadline"
      : everyoneAnswered ? "summary.allAnswered"
      : null;
    const title = offers > 0 ? msg("summary.titleOffers", { n: offers }) : msg("summary.titleNone");
    const best = [...this.offers.values()].sort(byPremium)[0];
    this.summary.dataset.status = SessionStatusSchema.value[status]?.name ?? "SESSION_STATUS_UNSPECIFIED";
    this.summary.dataset.tone = offers === 0 ? "bad" : everyoneAnswered ? "ok" : "warn";
    replace(this.summary,
      h("h3", { id: "summary-title", "data-testid": "summary-title" }, title),
      note ? h("p", { class: "summary-note", "data-testid": "summary-note" }, msg(note)) : null,
      h("p", { "data-testid": "summary-asked" }, msg("summary.asked", { n: rows.length })),
      h("ul", { class: "summary-counts" },
        ...counts.filter(([key, n]) => n > 0 || key === "count.offers").map(([key, n]) =>
          h("li", { "data-count": key }, msg(key, { n })))),
      best
        ? h("p", { class: "summary-best" }, msg("summary.best", {
            amount: money(best.premium), insurer: best.quote.insurerName || best.quote.insurerId,
          }))
        : null,
    );
    this.summary.hidden = false;
    this.stopAnnouncing();
    show(this.announcer, msg("announce.finished", { title }));
  }
}
