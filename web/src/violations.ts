// The server's field violations (google.rpc.BadRequest: a field path and an English description)
// in the page's language. The server's descriptions are for API users and stay as they are; the
// page recognises each kind of problem by its field and the start of its description, takes the
// numbers it states (limits, ages) and shows the catalogue's message instead. A description the
// page does not know yet still lands on its field, as a generic "check this field" message.

import { msg, type Key, type Msg } from "./i18n";

/** A problem with one field of the application, in the page's words. */
export interface Violation {
  /** The proto field path, e.g. "application.drivers[1].licence_number". */
  field: string;
  message: Msg;
}

interface Rule {
  /** The field path with list indices removed ("drivers[].licence_number"); null: any field. */
  field: RegExp | null;
  /** Matched against the description; its numbered groups are the message's placeholders. */
  description: RegExp;
  key: Key;
  /** Names of the placeholders filled from the description's groups, in order. */
  params?: readonly string[];
  /** Added to a number taken from the description (the server counts drivers from 0). */
  offset?: number;
  /** The numbers are years: shown as written (1900), not as amounts (1 900). */
  years?: boolean;
}

const NAME = /(^|\.)(last_name|first_name|middle_name)$/;

// The first matching rule wins: field-specific rules come before the general ones.
const RULES: readonly Rule[] = [
  { field: /^vehicle\.vin$/, description: /^either vin or body_number/, key: "violation.vinOrBody" },
  { field: /^vehicle\.vin$/, description: /^must be 17 characters/, key: "violation.vin" },
  { field: /^vehicle\.body_number$/, description: /^must be 3 to 30/, key: "violation.bodyNumber" },
  { field: /^vehicle\.plate$/, description: /^must be a letter, 3 digits/, key: "violation.plate" },
  { field: /^vehicle\.power_hp$/, description: /^must be between (\d+) and (\d+)/, key: "violation.power", params: ["min", "max"] },
  { field: /^vehicle\.category$/, description: /^only categories/, key: "violation.category" },
  { field: /^vehicle\.purpose$/, description: /^must be personal or taxi/, key: "violation.purpose" },
  { field: /^vehicle\.year$/, description: /^must be between (\d+) and the current year/, key: "violation.year", params: ["min"], years: true },
  { field: /\.series$/, description: /^must be empty for an EPTS/, key: "violation.seriesEpts" },
  { field: /\.series$/, description: /^must be 2 digits followed by/, key: "violation.series" },
  { field: /\.number$/, description: /^must be 15 digits/, key: "violation.numberEpts" },
  { field: /\.number$/, description: /^must be 6 digits/, key: "violation.number" },
  { field: /\.type$/, description: /^must be STS, PTS or EPTS/, key: "violation.docType" },
  { field: /\.issue_date$/, description: /^must not be before the vehicle's year/, key: "violation.issueBeforeYear" },
  { field: /^owner\.birth_date$/, description: /^the owner must be at least (\d+)/, key: "violation.ownerAge", params: ["n"] },
  { field: /^drivers\[\]\.birth_date$/, description: /^the driver must be at least (\d+)/, key: "violation.driverAge", params: ["n"] },
  { field: /registration_city$/, description: /^must be one of the supported cities/, key: "violation.city" },
  { field: /kbm_class$/, description: /^must be one of the classes/, key: "violation.kbmClass" },
  { field: /kbm_class$/, description: /^is required for a named driver/, key: "violation.kbmRequired" },
  { field: /^usage_months$/, description: /^must be 3\.\.12/, key: "violation.months" },
  { field: /^policy_start_date$/, description: /^must not be in the past/, key: "violation.startPast" },
  { field: /^policy_start_date$/, description: /^must be at most (\d+) days ahead/, key: "violation.startAhead", params: ["n"] },
  { field: /^drivers$/, description: /^must be empty when unlimited_drivers/, key: "violation.driversWithUnlimited" },
  { field: /^drivers$/, description: /^at least one named driver/, key: "violation.driversNone" },
  { field: /^drivers$/, description: /^at most (\d+) named drivers/, key: "violation.driversMax", params: ["n"] },
  { field: /^drivers\[\]\.licence_number$/, description: /^duplicates the licence number of drivers\[(\d+)\]/, key: "violation.licenceDuplicate", params: ["n"], offset: 1 },
  { field: /^drivers\[\]\.licence_number$/, description: /^must be 10 digits/, key: "violation.licence" },
  { field: /^drivers\[\]\.licence_issue_date$/, description: /^must not be before the driver's (\d+)/, key: "violation.licenceBeforeAge", params: ["n"] },
  { field: /^drivers\[\]\.licence_issue_date$/, description: /^driving experience does not fit/, key: "violation.experience" },
  { field: NAME, description: /^must be letters/, key: "violation.name" },
  { field: null, description: /^is required$/, key: "violation.required" },
  { field: null, description: /^must be a calendar date/, key: "violation.date" },
  { field: null, description: /^must not be in the future/, key: "violation.future" },
  { field: null, description: /^must not be before \d{4}-\d{2}-\d{2}/, key: "violation.tooEarly" },
  { field: null, description: /^must be at most (\d+) characters/, key: "violation.tooLong", params: ["n"] },
];

/** The server's violation on `field` as a message in the page's language. */
export function serverViolation(field: string, description: string): Violation {
  const relative = field.replace(/^application\./, "").replace(/\[\d+\]/g, "[]");
  for (const rule of RULES) {
    if (rule.field !== null && !rule.field.test(relative)) continue;
    const match = rule.description.exec(description);
    if (!match) continue;
    const params: Record<string, number | string> = {};
    (rule.params ?? []).forEach((name, i) => {
      const value = Number(match[i + 1]) + (rule.offset ?? 0);
      params[name] = rule.years ? String(value) : value;
    });
    return { field, message: msg(rule.key, rule.params ? params : undefined) };
  }
  return { field, message: msg("violation.unknown") };
}
