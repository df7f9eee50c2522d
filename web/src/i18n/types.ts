// The shapes of a message catalogue. A message is a text with {placeholders}, or the plural forms
// of one (chosen by Intl.PluralRules on the number in the `n` placeholder).

/** Plural forms: `other` always, the rest as the language needs (ru: one, few, many; en: one). */
export type PluralForms = { readonly other: string } & {
  readonly [C in Exclude<Intl.LDMLPluralRule, "other">]?: string;
};

export type Message = string | PluralForms;
