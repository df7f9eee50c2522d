// The live view of one quote session, built from its events: offers sorted by price (cheapest
// first, each inserted as it arrives, one row per insurer whatever is replayed), per-insurer
// status, a countdown and progress bar to the session deadline, and the summary at the end.

import { timestampMs } from "@bufbuild/protobuf/wkt";
import { byId, h, replace } from "./dom";
import {
  formatCoefficient,
  formatElapsed,
  formatMoment,
  formatRoubles,
  formatSecondsLeft,
  safeHttpUrl,
} from "./format";
import type { ConnectionState } from "./stream";
import {
  InsurerProgressState,
  SessionStatus,
  SessionStatusSchema,
  type InsurerFailed,
  type QuoteEvent,
  type SessionFinished,
} from "./gen/osago/v1/events_pb";
import { FailureReasonSchema, type Quote } from "./gen/osago/v1/quote_pb";

type InsurerState = "pending" | "accepted" | "offer" | "failed";

interface InsurerRow {
  el: HTMLLIElement;
  name: string;
  state: InsurerState;
}

const STATUS_TEXT: Record<number, string> = {
  [SessionStatus.COMPLETED]: "Every insurer has answered",
  [SessionStatus.DEADLINE_EXCEEDED]: "The time limit was reached",
  [SessionStatus.UPSTREAM_OUTAGE]: "The insurers could not be reached",
  [SessionStatus.CANCELLED]: "The request was cancelled",
  [SessionStatus.RUNNING]: "Still running",
};

const REASON_TEXT: Record<string, string> = {
  FAILURE_REASON_TIMEOUT: "did not answer in time",
  FAILURE_REASON_DEADLINE: "no offer before the time limit",
  FAILURE_REASON_UNAVAILABLE: "could not be reached",
  FAILURE_REASON_DECLINED: "declined the application",
  FAILURE_REASON_RATE_LIMITED: "too many requests right now",
  FAILURE_REASON_CIRCUIT_OPEN: "temporarily suspended after repeated failures",
  FAILURE_REASON_BAD_RESPONSE: "answered something we could not read",
  FAILURE_REASON_INSURER_ERROR: "reported an error",
  FAILURE_REASON_INTERNAL: "our error",
  FAILURE_REASON_CANCELLED: "cancelled",
};

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

  private readonly insurers = new Map<string, InsurerRow>();
  private readonly offers = new Map<string, { el: HTMLLIElement; premium: bigint; quote: Quote }>();
  private startedAtServer: number | undefined;
  private deadlineServer: number | undefined;
  private finishedAtServer: number | undefined;
  /** Lower bound of (server clock − local clock): max over events of (event time − arrival time). */
  private serverOffset = Number.NEGATIVE_INFINITY;
  private timer: number | undefined;

  /** Empties the view for request `requestId` and shows it. */
  reset(requestId: string): void {
    this.stopTimer();
    this.insurers.clear();
    this.offers.clear();
    this.startedAtServer = this.deadlineServer = this.finishedAtServer = undefined;
    this.serverOffset = Number.NEGATIVE_INFINITY;
    this.offersList.replaceChildren();
    this.insurersList.replaceChildren();
    this.offersEmpty.hidden = false;
    this.offersEmpty.textContent = "No offers yet.";
    this.summary.replaceChildren();
    this.summary.hidden = true;
    this.connection.textContent = "";
    this.requestLine.textContent = `Request ${requestId}`;
    this.countdown.textContent = "Starting…";
    this.progress.value = 0;
    this.section.dataset.state = "running";
    this.section.hidden = false;
    this.timer = window.setInterval(() => this.tick(), 250);
  }

  hide(): void {
    this.stopTimer();
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
        if (row.state === "offer" || row.state === "failed") break; // final states stay
        if (payload.value.state === InsurerProgressState.ACCEPTED) {
          this.setInsurer(row, "accepted", "Accepted the application, computing an offer");
        } else if (payload.value.state === InsurerProgressState.PENDING) {
          this.setInsurer(row, row.state, "Still computing an offer");
        }
        break;
      }
      case "insurerFailed":
        this.failInsurer(payload.value);
        break;
      case "sessionFinished":
        if (event.time) this.finishedAtServer = timestampMs(event.time);
        this.finish(payload.value);
        break;
      default:
        break;
    }
    this.tick();
  }

  /** Connection state in words, for the status line. */
  setConnection(state: ConnectionState, retryInMs?: number): void {
    const text: Record<ConnectionState, string> = {
      connecting: "Connecting…",
      live: "Live: offers appear as they arrive.",
      reconnecting: retryInMs === undefined
        ? "Connection lost; reconnecting…"
        : `Connection lost; reconnecting in ${Math.ceil(retryInMs / 1000)} s…`,
      finished: "",
      stopped: "",
      failed: "",
    };
    this.connection.textContent = text[state];
    this.connection.dataset.state = state;
  }

  /** A problem that ends following the session (unknown request, …). */
  showFatal(message: string): void {
    this.stopTimer();
    this.section.dataset.state = "failed";
    this.countdown.textContent = "";
    this.offersEmpty.hidden = this.offers.size > 0;
    this.summary.replaceChildren(h("h3", {}, "Cannot show this request"), h("p", {}, message));
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
      this.countdown.textContent = `Finished after ${formatElapsed(used)}`;
      this.stopTimer();
      return;
    }
    const now = Date.now() + this.offset();
    const left = this.deadlineServer - now;
    this.progress.value = Math.round(Math.min(1, Math.max(0, (now - start) / total)) * this.progress.max);
    this.countdown.textContent = left > 0 ? `${formatSecondsLeft(left)} left` : "Time is up; collecting the last answers…";
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
      this.setInsurer(row, "pending", "Asked; waiting for an answer");
    } else if (name && row.name !== name) {
      row.name = name;
    }
    (row.el.querySelector(".insurer-name") as HTMLElement).textContent = row.name;
    return row;
  }

  private setInsurer(row: InsurerRow, state: InsurerState, detail: string, code?: string): void {
    row.state = state;
    row.el.dataset.state = state;
    const label: Record<InsurerState, string> = {
      pending: "Pending",
      accepted: "Working",
      offer: "Offer",
      failed: "No offer",
    };
    (row.el.querySelector(".insurer-state") as HTMLElement).textContent = label[state];
    const detailEl = row.el.querySelector(".insurer-detail") as HTMLElement;
    replace(detailEl, detail, code ? h("code", { class: "reason-code" }, code) : null);
    if (code) row.el.dataset.reason = code;
  }

  private failInsurer(failure: InsurerFailed): void {
    const row = this.insurer(failure.insurerId, failure.insurerName);
    if (row.state === "offer") return;
    const code = FailureReasonSchema.value[failure.reason]?.name ?? `FAILURE_REASON_${failure.reason}`;
    const message = failure.message || REASON_TEXT[code] || "no offer";
    this.setInsurer(row, "failed", `${message} `, code.replace(/^FAILURE_REASON_/, ""));
  }

  private addOffer(quote: Quote): void {
    const row = this.insurer(quote.insurerId, quote.insurerName);
    const premium = quote.premiumKopecks;
    this.setInsurer(row, "offer", formatRoubles(premium));
    const existing = this.offers.get(quote.insurerId);
    if (existing) {
      // One row per insurer, ever: a repeated offer replaces the row in place.
      existing.el.remove();
      this.offers.delete(quote.insurerId);
    }
    const el = this.offerRow(quote);
    // Cheapest first; an equal price goes after those already shown.
    const next = [...this.offers.values()]
      .filter((o) => o.premium > premium)
      .sort((a, b) => (a.premium < b.premium ? -1 : a.premium > b.premium ? 1 : 0))[0];
    this.offersList.insertBefore(el, next ? next.el : null);
    this.offers.set(quote.insurerId, { el, premium, quote });
    this.offersEmpty.hidden = true;
  }

  private offerRow(quote: Quote): HTMLLIElement {
    const b = quote.breakdown;
    const coefficients: [string, string, string][] = b
      ? [
          ["ТБ", "base rate", formatRoubles(b.baseRateKopecks)],
          ["КТ", "territory", formatCoefficient(b.kt)],
          ["КБМ", "bonus-malus", formatCoefficient(b.kbm)],
          ["КВС", "age and experience", formatCoefficient(b.kvs)],
          ["КО", "drivers", formatCoefficient(b.ko)],
          ["КМ", "engine power", formatCoefficient(b.km)],
          ["КС", "months of use", formatCoefficient(b.ks)],
          ...(b.kn && b.kn !== 1 ? [["КН", "violations", formatCoefficient(b.kn)] as [string, string, string]] : []),
          ...(b.kp && b.kp !== 1 ? [["КП", "short term", formatCoefficient(b.kp)] as [string, string, string]] : []),
        ]
      : [];
    const url = safeHttpUrl(quote.purchaseUrl);
    const validUntil = quote.validUntil ? formatMoment(timestampMs(quote.validUntil)) : "";
    const name = quote.insurerName || quote.insurerId;
    return h("li", { class: "offer", "data-testid": "offer", "data-insurer-id": quote.insurerId, "data-premium-kopecks": quote.premiumKopecks.toString() },
      h("div", { class: "offer-head" },
        h("span", { class: "offer-insurer" }, name),
        h("span", { class: "offer-price", "data-testid": "offer-price" }, formatRoubles(quote.premiumKopecks)),
      ),
      validUntil || url
        ? h("p", { class: "offer-meta" },
            validUntil ? `Valid until ${validUntil}` : null,
            validUntil && url ? " · " : null,
            url ? h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, `Buy from ${name}`) : null)
        : null,
      coefficients.length > 0
        ? h("details", { class: "breakdown" },
            h("summary", {}, "How the price is made"),
            h("dl", {}, ...coefficients.flatMap(([code, meaning, value]) => [
              h("dt", {}, h("abbr", { title: meaning }, code), h("span", { class: "meaning" }, ` ${meaning}`)),
              h("dd", {}, value),
            ])),
            h("p", { class: "formula" }, `${coefficients.map(([code]) => code).join(" × ")} = ${formatRoubles(quote.premiumKopecks)}`),
          )
        : null,
    );
  }

  private finish(finished: SessionFinished): void {
    this.section.dataset.state = "finished";
    this.offersEmpty.textContent = "No insurer made an offer.";
    this.offersEmpty.hidden = this.offers.size > 0;
    const statusName = SessionStatusSchema.value[finished.status]?.name ?? "SESSION_STATUS_UNSPECIFIED";
    const best = [...this.offers.values()].sort((a, b) => (a.premium < b.premium ? -1 : a.premium > b.premium ? 1 : 0))[0];
    this.summary.dataset.status = statusName;
    replace(this.summary,
      h("h3", {}, STATUS_TEXT[finished.status] ?? "Finished"),
      finished.message ? h("p", { class: "summary-message" }, finished.message) : null,
      h("ul", { class: "summary-counts" },
        h("li", {}, h("strong", {}, String(finished.insurersAsked)), " insurers asked"),
        h("li", {}, h("strong", {}, String(finished.quotesReceived)), finished.quotesReceived === 1 ? " offer" : " offers"),
        h("li", {}, h("strong", {}, String(finished.insurersFailed)), " without an offer"),
      ),
      best ? h("p", { class: "summary-best" }, "Best price: ", h("strong", {}, formatRoubles(best.premium)),
        ` from ${best.quote.insurerName || best.quote.insurerId}`) : null,
    );
    this.summary.hidden = false;
  }
}
