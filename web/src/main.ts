// The OSAGO quote page: the application form, then the live session over grpc-web.
//
// The page and the grpc-web calls share one origin (Envoy's listener routes
// /osago.v1.AggregatorService/* to the aggregator and the rest to web_bridge), so the transport's
// base URL is the page's own origin and nothing else is ever called. The request id goes into the
// URL (?request=ID): a reload replays the session's events from the start and follows it on. The
// request's access token (from CreateQuoteRequest) stays in this tab's sessionStorage, never in
// the URL: a link opened elsewhere shows that the request cannot be shown there. Personal data
// never leaves the form except in the CreateQuoteRequest call: nothing is logged, stored in the
// browser or put in the URL.
//
// The page speaks Russian by default and English on request (i18n/): the language switch in the
// header re-renders every text in place and is remembered; the browser's languages are the first
// guess.

import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { BadRequestSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb";
import { AggregatorService, type CreateQuoteRequestResponse } from "./gen/osago/v1/aggregator_service_pb";
import { ApplicationSchema, type Application } from "./gen/osago/v1/application_pb";
import { byId } from "./dom";
import { ApplicationForm } from "./form";
import { initialLanguage, isLang, language, msg, onLanguageChange, setLanguage, type Lang } from "./i18n";
import { EventFollower, backoffMs } from "./stream";
import { serverViolation, type Violation } from "./violations";
import { SessionView } from "./view";
import kazanTwoDrivers from "../../examples/kazan-two-drivers.json";
import moscowYoungDriver from "../../examples/moscow-young-driver.json";
import spbUnlimited from "../../examples/spb-unlimited.json";

const PRESETS: Record<string, JsonValue> = {
  "moscow-young-driver": moscowYoungDriver,
  "kazan-two-drivers": kazanTwoDrivers,
  "spb-unlimited": spbUnlimited,
};

const CREATE_TIMEOUT_MS = 15_000;
const CREATE_ATTEMPTS = 3;
/** Worth retrying with the same idempotency key: the request may not have arrived. */
const CREATE_RETRYABLE = new Set([Code.Unavailable, Code.DeadlineExceeded]);
const MAX_REQUEST_ID = 128;

// First, so that everything built below is built in the page's language.
setLanguage(initialLanguage());

const transport = createGrpcWebTransport({ baseUrl: window.location.origin, useBinaryFormat: true });
const client = createClient(AggregatorService, transport);
const form = new ApplicationForm();
const view = new SessionView();
let follower: EventFollower | null = null;

function requestIdFromUrl(): string | null {
  const id = new URLSearchParams(window.location.search).get("request")?.trim();
  return id && id.length <= MAX_REQUEST_ID ? id : null;
}

const TOKEN_KEY = "osago.access.";

/** The access token of a request this tab created (sessionStorage: gone with the tab). */
function accessToken(requestId: string): string {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY + requestId) ?? "";
  } catch {
    return "";
  }
}

function rememberToken(requestId: string, token: string): void {
  try {
    window.sessionStorage.setItem(TOKEN_KEY + requestId, token);
  } catch {
    // Storage refused (private mode quota): the session is still followed from memory.
  }
}

function setUrlRequest(requestId: string | null): void {
  const url = new URL(window.location.href);
  if (requestId) url.searchParams.set("request", requestId);
  else url.searchParams.delete("request");
  window.history.pushState(null, "", url);
}

/** Shows request `requestId` and follows its events from the first one. */
function follow(requestId: string, token: string = accessToken(requestId)): void {
  follower?.stop();
  view.reset(requestId);
  const current = new EventFollower(client, requestId, token, {
    onEvent: (event) => {
      if (follower === current) view.apply(event);
    },
    onConnection: (state, retryInMs) => {
      if (follower === current) view.setConnection(state, retryInMs);
    },
    onFatal: (error) => {
      if (follower !== current) return;
      const text =
        error.code === Code.NotFound ? "fatal.notFound" : error.code === Code.PermissionDenied ? "fatal.denied" : "fatal.other";
      view.showFatal(msg(text));
    },
    deadlineMs: () => view.deadlineLocalMs(),
  });
  follower = current;
  void current.run();
}

function stopFollowing(): void {
  follower?.stop();
  follower = null;
  view.hide();
}

/** A fresh random idempotency key for one submission (crypto.randomUUID needs a secure context). */
function idempotencyKey(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function create(application: Application, key: string, fresh: boolean): Promise<CreateQuoteRequestResponse> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await client.createQuoteRequest({ application, idempotencyKey: key, fresh }, { timeoutMs: CREATE_TIMEOUT_MS });
    } catch (error) {
      const connectError = ConnectError.from(error);
      if (attempt >= CREATE_ATTEMPTS || !CREATE_RETRYABLE.has(connectError.code)) throw connectError;
      await new Promise((resolve) => window.setTimeout(resolve, backoffMs(attempt)));
    }
  }
}

function violationsOf(error: ConnectError): Violation[] {
  return error
    .findDetails(BadRequestSchema)
    .flatMap((detail) => detail.fieldViolations.map((v) => serverViolation(v.field, v.description)));
}

/** Whole seconds to wait before trying again, from google.rpc.RetryInfo if the server sent one. */
function retryAfterSeconds(error: ConnectError): number | null {
  for (const info of error.findDetails(RetryInfoSchema)) {
    const delay = info.retryDelay;
    if (!delay) continue;
    const seconds = Math.ceil(Number(delay.seconds) + delay.nanos / 1e9);
    if (seconds > 0) return seconds;
  }
  return null;
}

async function onSubmit(event: SubmitEvent): Promise<void> {
  event.preventDefault();
  await submit(false);
}

/** Sends the form's application; `fresh` asks every insurer anew instead of the cache of results. */
async function submit(fresh: boolean): Promise<void> {
  const { application, problems } = form.read();
  if (problems.length > 0) {
    form.showViolations(problems);
    return;
  }
  form.clearErrors();
  form.setBusy(true);
  try {
    const response = await create(application, idempotencyKey(), fresh);
    const requestId = response.quoteRequest?.requestId;
    if (!requestId) {
      form.showFormError(msg("form.noRequestId"));
      return;
    }
    const token = response.quoteRequest?.accessToken ?? "";
    rememberToken(requestId, token);
    setUrlRequest(requestId);
    follow(requestId, token);
    view.focus();
  } catch (error) {
    const connectError = ConnectError.from(error);
    const violations = connectError.code === Code.InvalidArgument ? violationsOf(connectError) : [];
    if (violations.length > 0) {
      form.showViolations(violations);
    } else if (connectError.code === Code.InvalidArgument) {
      form.showFormError(msg("form.notAccepted"));
    } else if (connectError.code === Code.ResourceExhausted) {
      // Busy: the server sheds new sessions; RetryInfo, when present, says for how long.
      const seconds = retryAfterSeconds(connectError);
      form.showFormError(seconds === null ? msg("form.busy") : msg("form.busyRetry", { n: seconds }));
    } else {
      form.showFormError(msg("form.unreachable"));
    }
  } finally {
    form.setBusy(false);
  }
}

form.form.addEventListener("submit", (event) => void onSubmit(event as SubmitEvent));
document.getElementById("ask-fresh")?.addEventListener("click", () => void submit(true));

for (const button of document.querySelectorAll<HTMLButtonElement>("button[data-preset]")) {
  button.addEventListener("click", () => {
    const preset = PRESETS[button.dataset.preset ?? ""];
    if (preset !== undefined) form.fill(fromJson(ApplicationSchema, preset));
  });
}

const languageButtons = [...document.querySelectorAll<HTMLButtonElement>("button[data-lang]")];
function markLanguage(lang: Lang): void {
  for (const button of languageButtons) button.setAttribute("aria-pressed", String(button.dataset.lang === lang));
}
onLanguageChange(markLanguage);
for (const button of languageButtons) {
  button.addEventListener("click", () => {
    const lang = button.dataset.lang;
    if (isLang(lang)) setLanguage(lang, true);
  });
}
markLanguage(language());

byId<HTMLButtonElement>("new-quote").addEventListener("click", () => {
  stopFollowing();
  setUrlRequest(null);
  form.form.scrollIntoView({ block: "start" });
  (form.form.querySelector("[data-field]") as HTMLElement | null)?.focus();
});

window.addEventListener("popstate", () => {
  const requestId = requestIdFromUrl();
  if (requestId === null) stopFollowing();
  else if (requestId !== follower?.requestId) follow(requestId);
});

const resumed = requestIdFromUrl();
if (resumed !== null) follow(resumed);
document.documentElement.dataset.ready = "true";
