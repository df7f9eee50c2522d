// Follows one quote request's event log over StreamQuoteEvents until SessionFinished, resuming
// after any break (network loss, a proxy or server restart) from the last sequence number seen,
// with exponential backoff and full jitter. Each event reaches `onEvent` exactly once, in order.

import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { AggregatorService } from "./gen/osago/v1/aggregator_service_pb";
import type { QuoteEvent } from "./gen/osago/v1/events_pb";

export type ConnectionState = "connecting" | "live" | "reconnecting" | "finished" | "stopped" | "failed";

export interface FollowerHooks {
  /** One new event (its seq is greater than every seq before it). */
  onEvent(event: QuoteEvent): void;
  /** Where the connection is; `retryInMs` while waiting to reconnect. */
  onConnection(state: ConnectionState, retryInMs?: number): void;
  /** The request cannot be followed at all (unknown id, …): no retry helps. */
  onFatal(error: ConnectError): void;
  /** Local-clock milliseconds after which the session must have finished, if known. */
  deadlineMs(): number | undefined;
}

const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 8_000;
/** After the deadline plus this, a stream that brings nothing is presumed dead and reopened. */
const STALL_GRACE_MS = 5_000;
/** Errors that no retry can fix. */
const FATAL = new Set([Code.NotFound, Code.InvalidArgument, Code.PermissionDenied, Code.Unauthenticated, Code.Unimplemented]);

export class EventFollower {
  private lastSeq = 0n;
  private finished = false;
  private stopped = false;
  private readonly stopper = new AbortController();
  private wake: (() => void) | null = null;
  private readonly onOnline = () => this.wake?.();

  constructor(
    private readonly client: Client<typeof AggregatorService>,
    readonly requestId: string,
    private readonly accessToken: string,
    private readonly hooks: FollowerHooks,
  ) {}

  /** The last sequence number applied. */
  get seq(): bigint {
    return this.lastSeq;
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.stopper.abort();
    this.wake?.();
  }

  async run(): Promise<void> {
    window.addEventListener("online", this.onOnline);
    try {
      await this.loop();
    } finally {
      window.removeEventListener("online", this.onOnline);
    }
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopped && !this.finished) {
      this.hooks.onConnection(failures === 0 && this.lastSeq === 0n ? "connecting" : "reconnecting");
      const call = new AbortController();
      const abortCall = () => call.abort();
      this.stopper.signal.addEventListener("abort", abortCall);
      let lastActivity = Date.now();
      const watchdog = window.setInterval(() => {
        const deadline = this.hooks.deadlineMs();
        const now = Date.now();
        if (deadline !== undefined && now > deadline + STALL_GRACE_MS && now - lastActivity > STALL_GRACE_MS) {
          call.abort(); // past the deadline and silent: the connection is gone without an error
        }
      }, 1_000);
      let live = false;
      try {
        const stream = this.client.streamQuoteEvents(
          { requestId: this.requestId, afterSeq: this.lastSeq, accessToken: this.accessToken },
          { signal: call.signal },
        );
        for await (const response of stream) {
          lastActivity = Date.now();
          if (!live) {
            live = true;
            failures = 0;
            this.hooks.onConnection("live");
          }
          const event = response.event;
          if (!event || event.seq <= this.lastSeq) continue; // already applied: never twice
          this.lastSeq = event.seq;
          if (event.payload.case === "sessionFinished") this.finished = true;
          this.hooks.onEvent(event);
        }
      } catch (error) {
        if (this.stopped) break;
        const connectError = ConnectError.from(error);
        if (FATAL.has(connectError.code)) {
          this.hooks.onConnection("failed");
          this.hooks.onFatal(connectError);
          return;
        }
        // Anything else (network loss, UNAVAILABLE, a reset stream, our own stall abort): resume.
      } finally {
        window.clearInterval(watchdog);
        this.stopper.signal.removeEventListener("abort", abortCall);
      }
      if (this.finished || this.stopped) break;
      failures += 1;
      const delay = backoffMs(failures);
      this.hooks.onConnection("reconnecting", delay);
      await this.sleep(delay);
    }
    this.hooks.onConnection(this.finished ? "finished" : "stopped");
  }

  /** Sleeps `ms`, or less when the browser comes back online or the follower is stopped. */
  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        window.clearTimeout(timer);
        this.wake = null;
        resolve();
      };
      const timer = window.setTimeout(done, ms);
      this.wake = done;
    });
  }
}

/** Full jitter: uniform in [0, min(cap, base·2^n)], at least 100 ms. */
export function backoffMs(attempt: number): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16));
  return Math.max(100, Math.round(Math.random() * ceiling));
}
