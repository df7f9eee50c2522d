// The catalogue type every language follows: the keys of ru.ts, each a text or plural forms as in
// ru.ts. Annotating another catalogue with it makes a missing key, an extra key or a text where ru
// has plural forms a compile error.

import type { ru } from "./ru";
import type { PluralForms } from "./types";

export type Key = keyof typeof ru;

export type Catalogue = {
  readonly [K in Key]: (typeof ru)[K] extends string ? string : PluralForms;
};
