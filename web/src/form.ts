// The application form: rendered from field specs so that every control has its label, hint and
// error element, and carries its proto field path (`data-field="application.vehicle.vin"`, error
// element `data-error-for="application.vehicle.vin"`) — the same paths the server's
// google.rpc.BadRequest field violations use.
//
// The server is the one judge of the application: the form converts what was typed into the
// proto message and shows the server's violations next to their fields. Only what cannot be put
// into the message at all (letters in a number field) is reported before sending.

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

export const MAX_DRIVERS = 5;

export interface Violation {
  field: string;
  description: string;
}

type Option = readonly [value: string, label: string];

interface Spec {
  /** Path under `application.`, e.g. "vehicle.vin" or, for drivers, "name.last_name". */
  path: string;
  label: string;
  kind: "text" | "int" | "date" | "select" | "checkbox";
  options?: readonly Option[];
  hint?: string;
  optional?: boolean;
  autocomplete?: string;
  upper?: boolean;
}

const KBM_CLASSES: readonly Option[] = [
  [String(KbmClass.KBM_CLASS_M), "M — КБМ 3.92"],
  [String(KbmClass.KBM_CLASS_0), "0 — КБМ 2.94"],
  [String(KbmClass.KBM_CLASS_1), "1 — КБМ 2.25"],
  [String(KbmClass.KBM_CLASS_2), "2 — КБМ 1.76"],
  [String(KbmClass.KBM_CLASS_3), "3 — КБМ 1.17 (new driver)"],
  [String(KbmClass.KBM_CLASS_4), "4 — КБМ 1.00"],
  [String(KbmClass.KBM_CLASS_5), "5 — КБМ 0.91"],
  [String(KbmClass.KBM_CLASS_6), "6 — КБМ 0.83"],
  [String(KbmClass.KBM_CLASS_7), "7 — КБМ 0.78"],
  [String(KbmClass.KBM_CLASS_8), "8 — КБМ 0.74"],
  [String(KbmClass.KBM_CLASS_9), "9 — КБМ 0.68"],
  [String(KbmClass.KBM_CLASS_10), "10 — КБМ 0.63"],
  [String(KbmClass.KBM_CLASS_11), "11 — КБМ 0.57"],
  [String(KbmClass.KBM_CLASS_12), "12 — КБМ 0.52"],
  [String(KbmClass.KBM_CLASS_13), "13 — КБМ 0.46"],
];

/** The cities the tariff knows (canonical names, as the server spells them) and other spellings. */
const CITIES: readonly (readonly [canonical: string, russian: string, aliases: readonly string[]])[] = [
  ["Moscow", "Москва", ["moskva"]],
  ["St Petersburg", "Санкт-Петербург", ["saint petersburg", "sankt peterburg", "петербург", "спб", "spb"]],
  ["Kazan", "Казань", []],
  ["Tyumen", "Тюмень", ["tiumen"]],
  ["Surgut", "Сургут", []],
  ["Chelyabinsk", "Челябинск", ["cheliabinsk"]],
  ["Ufa", "Уфа", []],
  ["Yaroslavl", "Ярославль", ["jaroslavl"]],
  ["Makhachkala", "Махачкала", ["mahachkala"]],
  ["Sevastopol", "Севастополь", []],
];

function normaliseCity(city: string): string {
  return city.toLowerCase().replace(/ё/g, "е").replace(/[-.,]+/g, " ").replace(/\s+/g, " ").trim();
}

/** The canonical name for a city spelled any known way, or null. */
export function canonicalCity(city: string): string | null {
  const wanted = normaliseCity(city);
  for (const [canonical, russian, aliases] of CITIES) {
    if ([canonical, russian, ...aliases].some((name) => normaliseCity(name) === wanted)) return canonical;
  }
  return null;
}

const VEHICLE: readonly Spec[] = [
  { path: "vehicle.vin", label: "VIN", kind: "text", upper: true,
    hint: "17 characters: digits and Latin letters except I, O, Q. Leave empty if the vehicle has none." },
  { path: "vehicle.body_number", label: "Body or chassis number", kind: "text", optional: true, upper: true,
    hint: "Only for a vehicle without a VIN." },
  { path: "vehicle.plate", label: "Registration plate", kind: "text", upper: true, hint: "Like А123ВС77." },
  { path: "vehicle.make", label: "Make", kind: "text", hint: "For example Lada." },
  { path: "vehicle.model", label: "Model", kind: "text", hint: "For example Vesta." },
  { path: "vehicle.year", label: "Year of manufacture", kind: "int" },
  { path: "vehicle.power_hp", label: "Engine power, hp", kind: "int" },
  { path: "vehicle.category", label: "Category", kind: "select", options: [
    [String(VehicleCategory.B), "B — car"],
    [String(VehicleCategory.BE), "BE — car with a trailer"],
  ] },
  { path: "vehicle.purpose", label: "Use", kind: "select", options: [
    [String(VehiclePurpose.PERSONAL), "Personal"],
    [String(VehiclePurpose.TAXI), "Taxi"],
  ] },
];

const DOCUMENT: readonly Spec[] = [
  { path: "vehicle.registration_document.type", label: "Document", kind: "select", options: [
    [String(RegistrationDocumentType.STS), "СТС — registration certificate"],
    [String(RegistrationDocumentType.PTS), "ПТС — vehicle passport"],
    [String(RegistrationDocumentType.EPTS), "ЭПТС — electronic vehicle passport"],
  ] },
  { path: "vehicle.registration_document.series", label: "Series", kind: "text", upper: true,
    hint: "Like 77ХТ; empty for an ЭПТС." },
  { path: "vehicle.registration_document.number", label: "Number", kind: "text",
    hint: "6 digits; an ЭПТС has 15." },
  { path: "vehicle.registration_document.issue_date", label: "Date of issue", kind: "date" },
];

const OWNER: readonly Spec[] = [
  { path: "owner.name.last_name", label: "Last name", kind: "text", autocomplete: "family-name" },
  { path: "owner.name.first_name", label: "First name", kind: "text", autocomplete: "given-name" },
  { path: "owner.name.middle_name", label: "Middle name (patronymic)", kind: "text", optional: true,
    autocomplete: "additional-name" },
  { path: "owner.birth_date", label: "Date of birth", kind: "date", autocomplete: "bday" },
  { path: "owner.registration_city", label: "City of registration", kind: "select",
    options: CITIES.map(([canonical, russian]) => [canonical, `${canonical} — ${russian}`] as const),
    hint: "Sets the territory coefficient КТ." },
  { path: "owner.registration_region", label: "Region", kind: "text", optional: true, autocomplete: "address-level1" },
  { path: "owner.kbm_class", label: "Owner's bonus-malus class", kind: "select",
    options: [[String(KbmClass.KBM_CLASS_UNSPECIFIED), "Not known (class 3)"], ...KBM_CLASSES],
    hint: "Used when any driver may drive." },
];

const DRIVERS: readonly Spec[] = [
  { path: "unlimited_drivers", label: "Any driver may drive (unlimited, КО 2.32)", kind: "checkbox" },
];

const DRIVER: readonly Spec[] = [
  { path: "name.last_name", label: "Last name", kind: "text" },
  { path: "name.first_name", label: "First name", kind: "text" },
  { path: "name.middle_name", label: "Middle name (patronymic)", kind: "text", optional: true },
  { path: "birth_date", label: "Date of birth", kind: "date" },
  { path: "licence_number", label: "Driving licence number", kind: "text", upper: true,
    hint: "10 digits, or 2 digits, 2 letters and 6 digits." },
  { path: "licence_issue_date", label: "First licence issued on", kind: "date",
    hint: "Driving experience counts from this date." },
  { path: "kbm_class", label: "Bonus-malus class", kind: "select", options: KBM_CLASSES },
];

const POLICY: readonly Spec[] = [
  { path: "policy_start_date", label: "Policy starts on", kind: "date", optional: true,
    hint: "Empty means tomorrow; at most 60 days ahead." },
  { path: "usage_months", label: "Months of use per year", kind: "select",
    options: Array.from({ length: 10 }, (_, i) => {
      const months = String(12 - i);
      return [months, months] as const;
    }),
    hint: "Sets the season coefficient КС." },
];

type Control = HTMLInputElement | HTMLSelectElement;

export class ApplicationForm {
  readonly form: HTMLFormElement;
  private readonly driversList: HTMLElement;
  private readonly addDriver: HTMLButtonElement;
  private readonly summary: HTMLElement;
  private readonly labels = new Map<string, string>();

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
    const text = (path: string) => this.control(path).value.trim();
    const int = (path: string) => {
      const raw = text(path);
      if (raw === "") return 0;
      if (!/^\d{1,9}$/.test(raw)) {
        problems.push({ field: path, description: "must be a whole number" });
        return 0;
      }
      return Number(raw);
    };
    const choice = (path: string) => Number(this.control(path).value) || 0;
    const a = "application";
    const unlimited = (this.control(`${a}.unlimited_drivers`) as HTMLInputElement).checked;
    const application = create(ApplicationSchema, {
      vehicle: {
        vin: text(`${a}.vehicle.vin`),
        bodyNumber: text(`${a}.vehicle.body_number`),
        plate: text(`${a}.vehicle.plate`),
        make: text(`${a}.vehicle.make`),
        model: text(`${a}.vehicle.model`),
        year: int(`${a}.vehicle.year`),
        powerHp: int(`${a}.vehicle.power_hp`),
        category: choice(`${a}.vehicle.category`),
        purpose: choice(`${a}.vehicle.purpose`),
        registrationDocument: {
          type: choice(`${a}.vehicle.registration_document.type`),
          series: text(`${a}.vehicle.registration_document.series`),
          number: text(`${a}.vehicle.registration_document.number`),
          issueDate: text(`${a}.vehicle.registration_document.issue_date`),
        },
      },
      owner: {
        name: {
          lastName: text(`${a}.owner.name.last_name`),
          firstName: text(`${a}.owner.name.first_name`),
          middleName: text(`${a}.owner.name.middle_name`),
        },
        birthDate: text(`${a}.owner.birth_date`),
        registrationCity: text(`${a}.owner.registration_city`),
        registrationRegion: text(`${a}.owner.registration_region`),
        kbmClass: choice(`${a}.owner.kbm_class`),
      },
      drivers: unlimited ? [] : this.currentDrivers(),
      unlimitedDrivers: unlimited,
      policyStartDate: text(`${a}.policy_start_date`),
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

  /** Shows each violation next to its field (others in the summary); focuses the first. */
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
      target.textContent = target.textContent ? `${target.textContent}; ${violation.description}` : violation.description;
      const control = this.form.querySelector<Control>(`[data-field="${CSS.escape(violation.field)}"]`);
      if (control) {
        control.setAttribute("aria-invalid", "true");
        first ??= control;
      }
    }
    const count = violations.length;
    const items = unplaced.map((v) => h("li", {}, `${this.labelFor(v.field)}: ${v.description}`));
    replace(this.summary,
      h("p", {}, `Please correct ${count === 1 ? "1 field" : `${count} fields`}.`),
      items.length > 0 ? h("ul", {}, ...items) : null,
    );
    this.summary.hidden = false;
    if (first) first.focus();
    else this.summary.focus();
  }

  /** A message for the whole form (not a field's), e.g. "the server cannot be reached". */
  showFormError(message: string): void {
    this.clearErrors();
    this.summary.replaceChildren(h("p", {}, message));
    this.summary.hidden = false;
  }

  clearErrors(): void {
    for (const el of this.form.querySelectorAll<HTMLElement>("[data-error-for]")) {
      if (el !== this.summary) el.textContent = "";
    }
    for (const el of this.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
    this.summary.replaceChildren();
    this.summary.hidden = true;
  }

  setBusy(busy: boolean): void {
    const submit = byId<HTMLButtonElement>("submit");
    submit.disabled = busy;
    submit.textContent = busy ? "Sending…" : "Get quotes";
    this.form.setAttribute("aria-busy", String(busy));
  }

  private clearError(target: EventTarget | null): void {
    if (!(target instanceof HTMLElement)) return;
    const path = target.dataset.field;
    if (!path || target.getAttribute("aria-invalid") !== "true") return;
    target.removeAttribute("aria-invalid");
    const error = this.form.querySelector(`[data-error-for="${CSS.escape(path)}"]`);
    if (error) error.textContent = "";
  }

  private labelFor(path: string): string {
    return this.labels.get(path) ?? path.replace(/^application\./, "");
  }

  private newDriver(): Driver {
    return create(DriverSchema, { kbmClass: KbmClass.KBM_CLASS_3 });
  }

  private currentDrivers(): Driver[] {
    const drivers: Driver[] = [];
    const count = this.driversList.querySelectorAll("fieldset.driver").length;
    for (let i = 0; i < count; i++) {
      const text = (p: string) => this.control(`application.drivers[${i}].${p}`).value.trim();
      drivers.push(create(DriverSchema, {
        name: { lastName: text("name.last_name"), firstName: text("name.first_name"), middleName: text("name.middle_name") },
        birthDate: text("birth_date"),
        licenceNumber: text("licence_number"),
        licenceIssueDate: text("licence_issue_date"),
        kbmClass: Number(text("kbm_class")) || 0,
      }));
    }
    return drivers;
  }

  private renderDrivers(drivers: readonly Driver[]): void {
    const fieldsets = drivers.map((driver, i) => {
      const base = `application.drivers[${i}]`;
      const fieldset = h("fieldset", { class: "driver", "data-driver-index": i },
        h("legend", {}, `Driver ${i + 1}`),
        h("div", { class: "grid" }, ...DRIVER.map((spec) => this.field(spec, `${base}.${spec.path}`, `Driver ${i + 1}: `))),
        drivers.length > 1
          ? h("button", { type: "button", class: "secondary", "data-remove-driver": i }, `Remove driver ${i + 1}`)
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
    this.addDriver.textContent = drivers.length >= MAX_DRIVERS ? `At most ${MAX_DRIVERS} drivers` : "Add a driver";
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

  private field(spec: Spec, path: string, labelPrefix = ""): HTMLElement {
    const id = `f-${idFor(path)}`;
    const hintId = spec.hint ? `${id}-hint` : null;
    const errorId = `${id}-error`;
    const describedBy = [hintId, errorId].filter(Boolean).join(" ");
    this.labels.set(path, labelPrefix + spec.label);
    const hint = hintId ? h("p", { class: "hint", id: hintId }, spec.hint) : null;
    const error = h("p", { class: "error", id: errorId, "data-error-for": path });
    if (spec.kind === "checkbox") {
      const input = h("input", { type: "checkbox", id, name: path, "data-field": path, "aria-describedby": describedBy });
      return h("div", { class: "field field-check" }, input, h("label", { for: id }, spec.label), hint, error);
    }
    const label = h("label", { for: id }, spec.label, spec.optional ? h("span", { class: "optional" }, " (optional)") : null);
    let control: Control;
    if (spec.kind === "select") {
      control = h("select", { id, name: path, "data-field": path, "aria-describedby": describedBy },
        ...(spec.options ?? []).map(([value, text]) => h("option", { value }, text)));
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
      select.append(h("option", { value: wanted }, wanted));
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
    if (![...select.options].some((o) => o.value === city)) select.append(h("option", { value: city }, city));
    select.value = city;
  }
}
