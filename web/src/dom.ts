// A tiny element builder. Text goes in only as catalogue messages (i18n/index.ts), rendered into
// text nodes, never as HTML: names, messages and ids come from the server or the user, and no
// text of the page is written in code.

import { show, type Msg } from "./i18n";

export type Attrs = Record<string, string | number | boolean | null | undefined>;
export type Child = Node | Msg | null | undefined | false;

function isMsg(child: Child): child is Msg {
  return typeof child === "object" && child !== null && !(child instanceof Node);
}

/**
 * A new element. A message child becomes the element's text when it is the only child, else a
 * <span> of its own: either way the message is re-rendered when the language changes.
 */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  const present = children.filter((child) => child !== null && child !== undefined && child !== false);
  if (present.length === 1 && isMsg(present[0])) show(el, present[0]);
  else append(el, ...present);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (isMsg(child)) {
      const span = document.createElement("span");
      show(span, child);
      parent.appendChild(span);
    } else {
      parent.appendChild(child);
    }
  }
}

/** The element with this id, which the page's HTML must have. */
export function byId<T extends HTMLElement = HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`the page has no #${id}`);
  return el as T;
}

/** An id-safe form of a field path: "application.drivers[0].birth_date" → "application-drivers-0-birth_date". */
export function idFor(path: string): string {
  return path.replace(/[^A-Za-z0-9_]+/g, "-").replace(/-+$/, "");
}

/** Like replaceChildren, skipping null / undefined / false children. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}
