// The palette: brushes, each holding a color, a prompt, a negative prompt and the region's
// mask strength, blur and prompt strength; and the list that edits them.

import { element } from "./dom.js";

/** Distinct colors for new brushes, in order; after these, hues around the wheel. */
const COLORS = [
  "#e53935", "#1e88e5", "#43a047", "#fdd835", "#8e24aa", "#fb8c00",
  "#00acc1", "#6d4c41", "#d81b60", "#7cb342", "#3949ab", "#f4511e",
];

/** The region fields a brush holds, with the API's defaults and limits. */
export const BRUSH_NUMBERS = [
  { key: "mask_strength", label: "Mask strength", min: 0, max: 1, step: 0.05, value: 1 },
  { key: "mask_std", label: "Blur (px)", min: 0, max: 64, step: 1, value: 0 },
  { key: "prompt_strength", label: "Prompt strength", min: 0, max: 1, step: 0.05, value: 1 },
];

function colorAt(index) {
  if (index < COLORS.length) return COLORS[index];
  const hue = (index * 137.508) % 360; // the golden angle: neighbors stay apart
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    const v = 0.45 - 0.4 * Math.max(-1, Math.min(k - 3, 9 - k, 1));
    return Math.round(v * 255).toString(16).padStart(2, "0");
  };
  return `#${f(0)}${f(8)}${f(4)}`;
}

export class Palette {
  /** `list` is the <ol> to fill; `onChange()` after any edit; `onSelect(id)` on a pick. */
  constructor(list, { onChange, onSelect, onClear }) {
    this.list = list;
    this.onChange = onChange;
    this.onSelect = onSelect;
    this.onClear = onClear;
    this.brushes = [];
    this.activeId = null;
    this.nextId = 1;
  }

  /** A new brush; `fields` may set its color, prompts and numbers. */
  add(fields = {}) {
    const used = new Set(this.brushes.map((b) => b.color));
    let index = this.brushes.length;
    while (used.has(colorAt(index))) index += 1;
    const brush = {
      id: this.nextId++,
      color: colorAt(index),
      prompt: "",
      negative_prompt: "",
      ...Object.fromEntries(BRUSH_NUMBERS.map((n) => [n.key, n.value])),
      ...fields,
    };
    this.brushes.push(brush);
    if (this.activeId === null) this.activeId = brush.id;
    this.render();
    this.onChange();
    return brush;
  }

  remove(id) {
    this.brushes = this.brushes.filter((b) => b.id !== id);
    if (this.activeId === id) this.activeId = this.brushes[0]?.id ?? null;
    this.render();
    this.onChange();
    this.onSelect(this.activeId);
  }

  /** Drop every brush (before an import). */
  clear() {
    this.brushes = [];
    this.activeId = null;
    this.render();
    this.onChange();
  }

  select(id) {
    if (!this.brushes.some((b) => b.id === id)) return;
    this.activeId = id;
    for (const item of this.list.children) {
      const active = Number(item.dataset.id) === id;
      item.classList.toggle("active", active);
      item.querySelector('input[type="radio"]').checked = active;
    }
    this.onSelect(id);
  }

  /** The n-th brush (0-based) by position, as the 1..9 keys pick them. */
  at(index) {
    return this.brushes[index];
  }

  position(id) {
    return this.brushes.findIndex((b) => b.id === id) + 1;
  }

  render() {
    this.list.replaceChildren(...this.brushes.map((brush, i) => this.item(brush, i + 1)));
  }

  item(brush, number) {
    const id = `brush-${brush.id}`;
    const li = element("li", { className: "brush" });
    li.dataset.id = String(brush.id);
    li.classList.toggle("active", brush.id === this.activeId);

    const head = element("div", { className: "brush-head" });
    const radio = element("input", {
      type: "radio", name: "active-brush", id: `${id}-active`,
      checked: brush.id === this.activeId,
    });
    radio.addEventListener("change", () => this.select(brush.id));
    const swatch = element("span", { className: "swatch" });
    swatch.style.background = brush.color;
    swatch.setAttribute("aria-hidden", "true");
    const name = element("label", { htmlFor: radio.id, textContent: `Brush ${number}` });
    const hex = element("span", { className: "help", textContent: brush.color });
    head.append(radio, swatch, name, hex);

    const prompt = this.text(brush, "prompt", `${id}-prompt`, "Prompt", 2);
    const negative = this.text(brush, "negative_prompt", `${id}-negative`, "Negative prompt", 1);

    const numbers = element("div", { className: "numbers" });
    for (const spec of BRUSH_NUMBERS) {
      const input = element("input", {
        type: "number", id: `${id}-${spec.key}`, min: spec.min, max: spec.max,
        step: spec.step, value: String(brush[spec.key]),
      });
      input.addEventListener("input", () => {
        brush[spec.key] = input.value === "" ? NaN : Number(input.value);
        this.onChange();
      });
      const label = element("label", { htmlFor: input.id, textContent: spec.label });
      label.append(input);
      numbers.append(label);
    }

    const buttons = element("div", { className: "buttons" });
    const clear = element("button", { type: "button", textContent: "Clear mask" });
    clear.setAttribute("aria-label", `Clear the mask of brush ${number}`);
    clear.addEventListener("click", () => this.onClear(brush.id));
    const remove = element("button", {
      type: "button", className: "danger", textContent: "Remove brush",
    });
    remove.setAttribute("aria-label", `Remove brush ${number}`);
    remove.addEventListener("click", () => this.remove(brush.id));
    buttons.append(clear, remove);

    li.append(head, ...prompt, ...negative, numbers, buttons);
    return li;
  }

  text(brush, key, id, label, rows) {
    const area = element("textarea", { id, rows, maxLength: 2000, value: brush[key] });
    area.addEventListener("input", () => {
      brush[key] = area.value;
      this.onChange();
    });
    return [element("label", { htmlFor: id, textContent: label }), area];
  }
}
