// The application form: rendered from field specs so that every control has its label, hint and
// error element, and carries its proto field path (`data-field="application.vehicle.vin"`, error
// element `data-error-for="application.vehicle.vin"`) — the same paths the server's
// google.rpc.BadRequest field violations use. Labels, hints and options are catalogue messages.
//
// The server is the one judge of the application: the form converts what was typed into the
// proto message and shows the server's violations (in the page's language, see violations.ts)
// next to their fields. Only what cannot be put into the message at all (letters in a number
// field) is reported before sending.

import { create } from "@bufbuild/protobuf";
import {
  ApplicationSchema,
  DriverSchema,
  KbmClass,
  RegistrationDocumentType,
  VehicleCategory,
  VehiclePurpose,
  type Application,
  type Driver,
} from "./gen/osago/v1/application_pb";
import { byId, h, idFor, replace } from "./dom";
import { LANGS, msg, show, text, type Key, type Msg } from "./i18n";
import type { Violation } from "./violations";

export const MAX_DRIVERS = 5;
/** КО for unlimited drivers, shown on the checkbox. */
const KO_UNLIMITED = 2.32;

type Option = readonly [value: string, label: Msg];

interface Spec {
  /** Path under `application.`, e.g. "vehicle.vin" or, for drivers, "name.last_name". */
  path: string;
  label: Key;
  kind: "text" | "int" | "date" | "select" | "checkbox";
  options?: readonly Option[];
  hint?: Key;
  optional?: boolean;
  autocomplete?: string;
  upper?: boolean;
}

/** Bonus-malus classes and their КБМ (the Bank of Russia's table). */
const KBM_TABLE: readonly (readonly [KbmClass, string, number])[] = [
  [KbmClass.KBM_CLASS_M, "M", 3.92],
  [KbmClass.KBM_CLASS_0, "0", 2.94],
  [KbmClass.KBM_CLASS_1, "1", 2.25],
  [KbmClass.KBM_CLASS_2, "2", 1.76],
  [KbmClass.KBM_CLASS_3, "3", 1.17],
  [KbmClass.KBM_CLASS_4, "4", 1.0],
  [KbmClass.KBM_CLASS_5, "5", 0.91],
  [KbmClass.KBM_CLASS_6, "6", 0.83],
  [KbmClass.KBM_CLASS_7, "7", 0.78],
  [KbmClass.KBM_CLASS_8, "8", 0.74],
  [KbmClass.KBM_CLASS_9, "9", 0.68],
  [KbmClass.KBM_CLASS_10, "10", 0.63],
  [KbmClass.KBM_CLASS_11, "11", 0.57],
  [KbmClass.KBM_CLASS_12, "12", 0.52],
  [KbmClass.KBM_CLASS_13, "13", 0.46],
];

const KBM_CLASSES: readonly Option[] = KBM_TABLE.map(([value, cls, kbm]) => [
  String(value),
  msg(value === KbmClass.KBM_CLASS_3 ? "option.kbm.new" : "option.kbm", { cls, kbm }),
] as const);

/**
 * The cities the tariff knows: the server's canonical name (an option's value, never shown), the
 * message naming it, and other Latin spellings a preset may use.
 */
const CITIES: readonly (readonly [canonical: string, name: Key, aliases: readonly string[]])[] = [
  ["Moscow", "city.Moscow", ["moskva"]],
  ["St Petersburg", "city.St Petersburg", ["saint petersburg", "sankt peterburg", "spb"]], // not text: matched spellings
  ["Kazan", "city.Kazan", []],
  ["Tyumen", "city.Tyumen", ["tiumen"]],
  ["Surgut", "city.Surgut", []],
  ["Chelyabinsk", "city.Chelyabinsk", ["cheliabinsk"]],
  ["Ufa", "city.Ufa", []],
  ["Yaroslavl", "city.Yaroslavl", ["jaroslavl"]],
  ["Makhachkala", "city.Makhachkala", ["mahachkala"]],
  ["Sevastopol", "city.Sevastopol", []],
];

function normaliseCity(city: string): string {
  return city.toLowerCase()
    .replace(/ё/g, "е") // not text: the same letter for matching
    .replace(/[-.,]+/g, " ").replace(/\s+/g, " ").trim();
}

/** The canonical name for a city spelled any known way (its name in either language too), or null. */
export function canonicalCity(city: string): string | null {
  const wanted = normaliseCity(city);
  for (const [canonical, name, aliases] of CITIES) {
    const names = [canonical, ...LANGS.map((lang) => text(msg(name), lang)), ...aliases];
    if (names.some((spelling) => normaliseCity(spelling) === wanted)) return canonical;
  }
  return null;
}

const VEHICLE: readonly Spec[] = [
  { path: "vehicle.vin", label: "field.vin", kind: "text", upper: true, hint: "hint.vin" },
  { path: "vehicle.body_number", label: "field.bodyNumber", kind: "text", optional: true, upper: true, hint: "hint.bodyNumber" },
  { path: "vehicle.plate", label: "field.plate", kind: "text", upper: true, hint: "hint.plate" },
  { path: "vehicle.make", label: "field.make", kind: "text", hint: "hint.make" },
  { path: "vehicle.model", label: "field.model", kind: "text", hint: "hint.model" },
  { path: "vehicle.year", label: "field.year", kind: "int" },
  { path: "vehicle.power_hp", label: "field.powerHp", kind: "int" },
  { path: "vehicle.category", label: "field.category", kind: "select", options: [
    [String(VehicleCategory.B), msg("option.category.b")],
    [String(VehicleCategory.BE), msg("option.category.be")],
  ] },
  { path: "vehicle.purpose", label: "field.purpose", kind: "select", options: [
    [String(VehiclePurpose.PERSONAL), msg("option.purpose.personal")],
    [String(VehiclePurpose.TAXI), msg("option.purpose.taxi")],
  ] },
];

const DOCUMENT: readonly Spec[] = [
  { path: "vehicle.registration_document.type", label: "field.docType", kind: "select", options: [
    [String(RegistrationDocumentType.STS), msg("option.doc.sts")],
    [String(RegistrationDocumentType.PTS), msg("option.doc.pts")],
    [String(RegistrationDocumentType.EPTS), msg("option.doc.epts")],
  ] },
  { path: "vehicle.registration_document.series", label: "field.docSeries", kind: "text", upper: true, hint: "hint.docSeries" },
  { path: "vehicle.registration_document.number", label: "field.docNumber", kind: "text", hint: "hint.docNumber" },
  { path: "vehicle.registration_document.issue_date", label: "field.docIssueDate", kind: "date" },
];

const OWNER: readonly Spec[] = [
  { path: "owner.name.last_name", label: "field.lastName", kind: "text", autocomplete: "family-name" },
  { path: "owner.name.first_name", label: "field.firstName", kind: "text", autocomplete: "given-name" },
  { path: "owner.name.middle_name", label: "field.middleName", kind: "text", optional: true, autocomplete: "additional-name" },
  { path: "owner.birth_date", label: "field.birthDate", kind: "date", autocomplete: "bday" },
  { path: "owner.registration_city", label: "field.city", kind: "select", hint: "hint.city",
    options: CITIES.map(([canonical, name]) => [canonical, msg(name)] as const) },
  { path: "owner.registration_region", label: "field.region", kind: "text", optional: true, autocomplete: "address-level1" },
  { path: "owner.kbm_class", label: "field.ownerKbm", kind: "select", hint: "hint.ownerKbm",
    options: [[String(KbmClass.KBM_CLASS_UNSPECIFIED), msg("option.kbm.unknown")], ...KBM_CLASSES] },
];

const DRIVERS: readonly Spec[] = [
  { path: "unlimited_drivers", label: "field.unlimited", kind: "checkbox" },
];

const DRIVER: readonly Spec[] = [
  { path: "name.last_name", label: "field.lastName", kind: "text" },
  { path: "name.first_name", label: "field.firstName", kind: "text" },
  { path: "name.middle_name", label: "field.middleName", kind: "text", optional: true },
  { path: "birth_date", label: "field.birthDate", kind: "date" },
  { path: "licence_number", label: "field.licenceNumber", kind: "text", upper: true, hint: "hint.licenceNumber" },
  { path: "licence_issue_date", label: "field.licenceIssueDate", kind: "date", hint: "hint.licenceIssueDate" },
  { path: "kbm_class", label: "field.driverKbm", kind: "select", options: KBM_CLASSES },
];

const POLICY: readonly Spec[] = [
  { path: "policy_start_date", label: "field.policyStart", kind: "date", optional: true, hint: "hint.policyStart" },
  { path: "usage_months", label: "field.usageMonths", kind: "select", hint: "hint.usageMonths",
    options: Array.from({ length: 10 }, (_, i) => [String(12 - i), msg("value.number", { n: 12 - i })] as const) },
];

type Control = HTMLInputElement | HTMLSelectElement;

export class ApplicationForm {
  readonly form: HTMLFormElement;
  private readonly driversList: HTMLElement;
  private readonly addDriver: HTMLButtonElement;
  private readonly summary: HTMLElement;
  private readonly labels = new Map<string, Msg>();

  constructor() {
    this.form = byId<HTMLFormElement>("application-form");
    this.driversList = byId("drivers-list");
    this.addDriver = byId<HTMLButtonElement>("add-driver");
    this.summary = byId("form-errors");
    this.mount("vehicle-fields", VEHICLE);
    this.mount("document-fields", DOCUMENT);
    this.mount("owner-fields", OWNER);
    this.mount("drivers-fields", DRIVERS);
    this.mount("policy-fields", POLICY);
    this.renderDrivers([this.newDriver()]);
    this.control("application.unlimited_drivers").addEventListener("change", () => this.syncUnlimited());
    this.addDriver.addEventListener("click", () => {
      const drivers = this.currentDrivers();
      if (drivers.length >= MAX_DRIVERS) return;
      this.renderDrivers([...drivers, this.newDriver()]);
      this.control(`application.drivers[${drivers.length}].name.last_name`).focus();
    });
    this.driversList.addEventListener("click", (event) => {
      const button = (event.target as Element).closest<HTMLButtonElement>("button[data-remove-driver]");
      if (!button) return;
      const index = Number(button.dataset.removeDriver);
      const drivers = this.currentDrivers().filter((_, i) => i !== index);
      this.renderDrivers(drivers);
      this.addDriver.focus();
    });
    // Editing a field retires its error message.
    this.form.addEventListener("input", (event) => this.clearError(event.target));
    this.form.addEventListener("change", (event) => this.clearError(event.target));
    this.syncUnlimited();
  }

  /** The application as typed, or the fields that cannot be put into the message at all. */
  read(): { application: Application; problems: Violation[] } {
    const problems: Violation[] = [];
    const value = (path: string) => this.control(path).value.trim();
    const int = (path: string) => {
      const raw = value(path);
      if (raw === "") return 0;
      if (!/^\d{1,9}$/.test(raw)) {
        problems.push({ field: path, message: msg("violation.wholeNumber") });
        return 0;
      }
      return Number(raw);
    };
    const choice = (path: string) => Number(this.control(path).value) || 0;
    const a = "application";
    const unlimited = (this.control(`${a}.unlimited_drivers`) as HTMLInputElement).checked;
    const application = create(ApplicationSchema, {
      vehicle: {
        vin: value(`${a}.vehicle.vin`),
        bodyNumber: value(`${a}.vehicle.body_number`),
        plate: value(`${a}.vehicle.plate`),
        make: value(`${a}.vehicle.make`),
        model: value(`${a}.vehicle.model`),
        year: int(`${a}.vehicle.year`),
        powerHp: int(`${a}.vehicle.power_hp`),
        category: choice(`${a}.vehicle.category`),
        purpose: choice(`${a}.vehicle.purpose`),
        registrationDocument: {
          type: choice(`${a}.vehicle.registration_document.type`),
          series: value(`${a}.vehicle.registration_document.series`),
          number: value(`${a}.vehicle.registration_document.number`),
          issueDate: value(`${a}.vehicle.registration_document.issue_date`),
        },
      },
      owner: {
        name: {
          lastName: value(`${a}.owner.name.last_name`),
          firstName: value(`${a}.owner.name.first_name`),
          middleName: value(`${a}.owner.name.middle_name`),
        },
        birthDate: value(`${a}.owner.birth_date`),
        registrationCity: value(`${a}.owner.registration_city`),
        registrationRegion: value(`${a}.owner.registration_region`),
        kbmClass: choice(`${a}.owner.kbm_class`),
      },
      drivers: unlimited ? [] : this.currentDrivers(),
      unlimitedDrivers: unlimited,
      policyStartDate: value(`${a}.policy_start_date`),
      usageMonths: choice(`${a}.usage_months`),
    });
    return { application, problems };
  }

  /** Fills every field from `app` (a preset). */
  fill(app: Application): void {
    this.clearErrors();
    const a = "application";
    const v = app.vehicle;
    const doc = v?.registrationDocument;
    const owner = app.owner;
    this.setText(`${a}.vehicle.vin`, v?.vin ?? "");
    this.setText(`${a}.vehicle.body_number`, v?.bodyNumber ?? "");
    this.setText(`${a}.vehicle.plate`, v?.plate ?? "");
    this.setText(`${a}.vehicle.make`, v?.make ?? "");
    this.setText(`${a}.vehicle.model`, v?.model ?? "");
    this.setText(`${a}.vehicle.year`, v?.year ? String(v.year) : "");
    this.setText(`${a}.vehicle.power_hp`, v?.powerHp ? String(v.powerHp) : "");
    this.setChoice(`${a}.vehicle.category`, v?.category || VehicleCategory.B);
    this.setChoice(`${a}.vehicle.purpose`, v?.purpose || VehiclePurpose.PERSONAL);
    this.setChoice(`${a}.vehicle.registration_document.type`, doc?.type || RegistrationDocumentType.STS);
    this.setText(`${a}.vehicle.registration_document.series`, doc?.series ?? "");
    this.setText(`${a}.vehicle.registration_document.number`, doc?.number ?? "");
    this.setText(`${a}.vehicle.registration_document.issue_date`, doc?.issueDate ?? "");
    this.setText(`${a}.owner.name.last_name`, owner?.name?.lastName ?? "");
    this.setText(`${a}.owner.name.first_name`, owner?.name?.firstName ?? "");
    this.setText(`${a}.owner.name.middle_name`, owner?.name?.middleName ?? "");
    this.setText(`${a}.owner.birth_date`, owner?.birthDate ?? "");
    this.setCity(owner?.registrationCity ?? "");
    this.setText(`${a}.owner.registration_region`, owner?.registrationRegion ?? "");
    this.setChoice(`${a}.owner.kbm_class`, owner?.kbmClass ?? KbmClass.KBM_CLASS_UNSPECIFIED);
    (this.control(`${a}.unlimited_drivers`) as HTMLInputElement).checked = app.unlimitedDrivers;
    this.renderDrivers(app.drivers.length > 0 || app.unlimitedDrivers ? app.drivers.slice(0, MAX_DRIVERS) : [this.newDriver()]);
    this.setText(`${a}.policy_start_date`, app.policyStartDate);
    this.setChoice(`${a}.usage_months`, app.usageMonths || 12);
    this.syncUnlimited();
  }

  /**
   * Shows each violation next to its field (the field marked aria-invalid, its error element
   * named by its aria-describedby) and the count in the form's alert; focuses the first invalid
   * field, or the alert when no violation has a field of its own.
   */
  showViolations(violations: readonly Violation[]): void {
    this.clearErrors();
    const unplaced: Violation[] = [];
    let first: Control | null = null;
    for (const violation of violations) {
      const target = this.form.querySelector<HTMLElement>(`[data-error-for="${CSS.escape(violation.field)}"]`);
      if (!target || target === this.summary) {
        unplaced.push(violation);
        continue;
      }
      target.append(h("span", { class: "error-item" }, violation.message));
      const control = this.form.querySelector<Control>(`[data-field="${CSS.escape(violation.field)}"]`);
      if (control) {
        control.setAttribute("aria-invalid", "true");
        first ??= control;
      }
    }
    const items = unplaced.map((v) =>
      h("li", {}, msg("form.problem", { label: this.labelFor(v.field), problem: v.message })));
    replace(this.summary,
      h("p", {}, msg("form.fixFields", { n: violations.length })),
      items.length > 0 ? h("ul", {}, ...items) : null,
    );
    this.summary.hidden = false;
    if (first) first.focus();
    else this.summary.focus();
  }

  /** A message for the whole form (not a field's), e.g. "the server cannot be reached"; focused. */
  showFormError(message: Msg): void {
    this.clearErrors();
    replace(this.summary, h("p", {}, message));
    this.summary.hidden = false;
    this.summary.focus();
  }

  clearErrors(): void {
    for (const el of this.form.querySelectorAll<HTMLElement>("[data-error-for]")) {
      if (el !== this.summary) el.replaceChildren();
    }
    for (const el of this.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    this.summary.replaceChildren();
    this.summary.hidden = true;
  }

  setBusy(busy: boolean): void {
    const submit = byId<HTMLButtonElement>("submit");
    submit.disabled = busy;
    show(submit, msg(busy ? "form.sending" : "form.submit"));
    this.form.setAttribute("aria-busy", String(busy));
  }

  private clearError(target: EventTarget | null): void {
    if (!(target instanceof HTMLElement)) return;
    const path = target.dataset.field;
    if (!path || target.getAttribute("aria-invalid") !== "true") return;
    target.removeAttribute("aria-invalid");
    this.form.querySelector(`[data-error-for="${CSS.escape(path)}"]`)?.replaceChildren();
  }

  private labelFor(path: string): Msg {
    return this.labels.get(path) ?? msg("value.text", { text: path.replace(/^application\./, "") });
  }

  private newDriver(): Driver {
    return create(DriverSchema, { kbmClass: KbmClass.KBM_CLASS_3 });
  }

  private currentDrivers(): Driver[] {
    const drivers: Driver[] = [];
    const count = this.driversList.querySelectorAll("fieldset.driver").length;
    for (let i = 0; i < count; i++) {
      const value = (p: string) => this.control(`application.drivers[${i}].${p}`).value.trim();
      drivers.push(create(DriverSchema, {
        name: { lastName: value("name.last_name"), firstName: value("name.first_name"), middleName: value("name.middle_name") },
        birthDate: value("birth_date"),
        licenceNumber: value("licence_number"),
        licenceIssueDate: value("licence_issue_date"),
        kbmClass: Number(value("kbm_class")) || 0,
      }));
    }
    return drivers;
  }

  private renderDrivers(drivers: readonly Driver[]): void {
    const fieldsets = drivers.map((driver, i) => {
      const base = `application.drivers[${i}]`;
      const fieldset = h("fieldset", { class: "driver", "data-driver-index": i },
        h("legend", {}, msg("form.driver", { n: i + 1 })),
        h("div", { class: "grid" }, ...DRIVER.map((spec) => this.field(spec, `${base}.${spec.path}`, i + 1))),
        drivers.length > 1
          ? h("button", { type: "button", class: "secondary", "data-remove-driver": i }, msg("form.removeDriver", { n: i + 1 }))
          : null,
      );
      return { fieldset, driver, base };
    });
    this.driversList.replaceChildren(...fieldsets.map((f) => f.fieldset));
    for (const { driver, base } of fieldsets) {
      this.setText(`${base}.name.last_name`, driver.name?.lastName ?? "");
      this.setText(`${base}.name.first_name`, driver.name?.firstName ?? "");
      this.setText(`${base}.name.middle_name`, driver.name?.middleName ?? "");
      this.setText(`${base}.birth_date`, driver.birthDate);
      this.setText(`${base}.licence_number`, driver.licenceNumber);
      this.setText(`${base}.licence_issue_date`, driver.licenceIssueDate);
      this.setChoice(`${base}.kbm_class`, driver.kbmClass || KbmClass.KBM_CLASS_3);
    }
    this.addDriver.disabled = drivers.length >= MAX_DRIVERS;
    show(this.addDriver, drivers.length >= MAX_DRIVERS ? msg("form.maxDrivers", { n: MAX_DRIVERS }) : msg("form.addDriver"));
  }

  private syncUnlimited(): void {
    const unlimited = (this.control("application.unlimited_drivers") as HTMLInputElement).checked;
    this.driversList.hidden = unlimited;
    this.addDriver.hidden = unlimited;
    if (!unlimited && this.driversList.children.length === 0) this.renderDrivers([this.newDriver()]);
  }

  private mount(containerId: string, specs: readonly Spec[]): void {
    byId(containerId).replaceChildren(...specs.map((spec) => this.field(spec, `application.${spec.path}`)));
  }

  /** One field: label, control, hint and error element; `driver` numbers a driver's field. */
  private field(spec: Spec, path: string, driver?: number): HTMLElement {
    const id = `f-${idFor(path)}`;
    const hintId = spec.hint ? `${id}-hint` : null;
    const errorId = `${id}-error`;
    const describedBy = [hintId, errorId].filter(Boolean).join(" ");
    const labelText = spec.label === "field.unlimited" ? msg(spec.label, { ko: KO_UNLIMITED }) : msg(spec.label);
    this.labels.set(path, driver === undefined ? labelText : msg("form.driverField", { n: driver, label: labelText }));
    const hint = spec.hint ? h("p", { class: "hint", id: hintId }, msg(spec.hint)) : null;
    // Read out with the field (aria-describedby); the form's alert says how many fields are wrong.
    const error = h("p", { class: "error", id: errorId, "data-error-for": path });
    if (spec.kind === "checkbox") {
      const input = h("input", { type: "checkbox", id, name: path, "data-field": path, "aria-describedby": describedBy });
      return h("div", { class: "field field-check" }, input, h("label", { for: id }, labelText), hint, error);
    }
    const label = h("label", { for: id }, labelText, spec.optional ? h("span", { class: "optional" }, msg("form.optional")) : null);
    let control: Control;
    if (spec.kind === "select") {
      control = h("select", { id, name: path, "data-field": path, "aria-describedby": describedBy },
        ...(spec.options ?? []).map(([value, label]) => h("option", { value }, label)));
    } else {
      control = h("input", {
        id,
        name: path,
        type: spec.kind === "date" ? "date" : "text",
        inputmode: spec.kind === "int" ? "numeric" : null,
        autocomplete: spec.autocomplete ?? "off",
        autocapitalize: spec.upper ? "characters" : null,
        spellcheck: spec.kind === "text" ? "false" : null,
        "aria-required": spec.optional ? null : "true",
        "aria-describedby": describedBy,
        "data-field": path,
      });
    }
    return h("div", { class: `field field-${spec.kind}` }, label, control, hint, error);
  }

  private control(path: string): Control {
    const el = this.form.querySelector<Control>(`[data-field="${CSS.escape(path)}"]`);
    if (!el) throw new Error(`the form has no field ${path}`);
    return el;
  }

  private setText(path: string, value: string): void {
    this.control(path).value = value;
  }

  private setChoice(path: string, value: number): void {
    const select = this.control(path) as HTMLSelectElement;
    const wanted = String(value);
    if (![...select.options].some((o) => o.value === wanted)) {
      select.append(h("option", { value: wanted }, msg("value.text", { text: wanted })));
    }
    select.value = wanted;
  }

  private setCity(city: string): void {
    const select = this.control("application.owner.registration_city") as HTMLSelectElement;
    const canonical = city ? canonicalCity(city) : "Moscow";
    if (canonical) {
      select.value = canonical;
      return;
    }
    // A city the page does not know: keep it as given and let the server judge it.
    if (![...select.options].some((o) => o.value === city)) select.append(h("option", { value: city }, msg("value.text", { text: city })));
    select.value = city;
  }
}
