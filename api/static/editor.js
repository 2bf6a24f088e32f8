// The painting canvas: one full-size layer per brush, a brush and an eraser, mouse, pen, touch
// and keyboard. A pixel belongs to at most one brush: painting takes it from the others.

/** How opaque the brushes' colors are drawn over the background picture. */
const LAYER_ALPHA = 0.55;
/** Pixels the keyboard cursor moves per arrow key press (with Shift: fast). */
const KEY_STEP = 8;
const KEY_STEP_FAST = 64;

export class Editor {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.width = canvas.width;
    this.height = canvas.height;
    this.layers = new Map(); // brush id -> canvas
    this.colors = new Map(); // brush id -> #rrggbb
    this.order = []; // brush ids, bottom to top
    this.background = null; // ImageBitmap, stretched to the canvas
    this.tool = "brush";
    this.sizes = { brush: 64, eraser: 96 };
    this.active = null; // the brush id that paints
    this.cursor = { x: this.width / 2, y: this.height / 2 };
    this.cursorShown = false;
    this.last = null; // the previous point of the stroke being painted
    this.spaceHeld = false;
    this.pending = false;
    this.listen();
    this.draw();
  }

  // -- layers -------------------------------------------------------------------------------

  /** Make the layers match the palette: `brushes` is [{ id, color }] in palette order. */
  setBrushes(brushes) {
    const ids = new Set(brushes.map((b) => b.id));
    for (const id of [...this.layers.keys()]) if (!ids.has(id)) this.layers.delete(id);
    for (const brush of brushes) {
      if (!this.layers.has(brush.id)) this.layers.set(brush.id, this.newLayer());
      this.colors.set(brush.id, brush.color);
    }
    this.order = brushes.map((b) => b.id);
    if (!ids.has(this.active)) this.active = this.order[0] ?? null;
    this.draw();
  }

  layer(id) {
    return this.layers.get(id);
  }

  newLayer() {
    const layer = document.createElement("canvas");
    layer.width = this.width;
    layer.height = this.height;
    layer.getContext("2d", { willReadFrequently: true }); // masks are read back on export
    return layer;
  }

  clearLayer(id) {
    const layer = this.layers.get(id);
    layer.getContext("2d").clearRect(0, 0, layer.width, layer.height);
    this.draw();
  }

  /** A new canvas size; what is painted is stretched to it. */
  resize(width, height) {
    if (width === this.width && height === this.height) return;
    for (const [id, old] of this.layers) {
      const layer = document.createElement("canvas");
      layer.width = width;
      layer.height = height;
      layer.getContext("2d", { willReadFrequently: true }).drawImage(old, 0, 0, width, height);
      this.layers.set(id, layer);
    }
    this.width = this.canvas.width = width;
    this.height = this.canvas.height = height;
    this.cursor = { x: width / 2, y: height / 2 };
    this.draw();
  }

  setBackground(bitmap) {
    this.background = bitmap;
    this.draw();
  }

  // -- painting -----------------------------------------------------------------------------

  size() {
    return this.sizes[this.tool];
  }

  /** Paint (or erase) a round-capped line from `from` to `to` in canvas pixels. */
  stroke(from, to) {
    if (this.tool === "brush" && !this.layers.has(this.active)) return;
    for (const [id, layer] of this.layers) {
      const ctx = layer.getContext("2d");
      const paints = this.tool === "brush" && id === this.active;
      ctx.globalCompositeOperation = paints ? "source-over" : "destination-out";
      ctx.fillStyle = ctx.strokeStyle = paints ? this.colors.get(id) : "#000";
      ctx.lineWidth = this.size();
      ctx.lineCap = ctx.lineJoin = "round";
      ctx.beginPath();
      if (from.x === to.x && from.y === to.y) {
        ctx.arc(to.x, to.y, this.size() / 2, 0, Math.PI * 2);
        ctx.fill();
      } else {
        ctx.moveTo(from.x, from.y);
        ctx.lineTo(to.x, to.y);
        ctx.stroke();
      }
      ctx.globalCompositeOperation = "source-over";
    }
    this.draw();
  }

  /** Where the picture lies on screen: the element's box less object-fit's letterbox. */
  shownBox() {
    const box = this.canvas.getBoundingClientRect();
    const scale = Math.min(box.width / this.width, box.height / this.height) || 1;
    return {
      left: box.left + (box.width - this.width * scale) / 2,
      top: box.top + (box.height - this.height * scale) / 2,
      scale, // screen pixels per canvas pixel
    };
  }

  /** The canvas pixel under a pointer event. */
  pointAt(event) {
    const shown = this.shownBox();
    return {
      x: (event.clientX - shown.left) / shown.scale,
      y: (event.clientY - shown.top) / shown.scale,
    };
  }

  listen() {
    const canvas = this.canvas;
    canvas.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      canvas.setPointerCapture(event.pointerId);
      this.last = this.pointAt(event);
      this.cursor = this.last;
      this.stroke(this.last, this.last);
    });
    canvas.addEventListener("pointermove", (event) => {
      const point = this.pointAt(event);
      this.cursor = point;
      this.cursorShown = true;
      if (this.last) {
        this.stroke(this.last, point);
        this.last = point;
      } else {
        this.draw();
      }
    });
    const end = () => {
      this.last = null;
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("pointerleave", () => {
      if (document.activeElement !== canvas) this.cursorShown = false;
      this.draw();
    });
    canvas.addEventListener("focus", () => {
      this.cursorShown = true;
      this.draw();
    });
    canvas.addEventListener("blur", () => {
      this.cursorShown = false;
      this.spaceHeld = false;
      this.draw();
    });
    canvas.addEventListener("keydown", (event) => this.onKey(event));
    canvas.addEventListener("keyup", (event) => {
      if (event.key === " ") this.spaceHeld = false;
    });
  }

  onKey(event) {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (event.key in moves) {
      event.preventDefault();
      const [dx, dy] = moves[event.key];
      const step = event.shiftKey ? KEY_STEP_FAST : KEY_STEP;
      const from = this.cursor;
      const to = {
        x: Math.min(this.width - 1, Math.max(0, from.x + dx * step)),
        y: Math.min(this.height - 1, Math.max(0, from.y + dy * step)),
      };
      this.cursor = to;
      if (this.spaceHeld) this.stroke(from, to);
      else this.draw();
    } else if (event.key === " " || event.key === "Enter") {
      event.preventDefault();
      if (event.key === " ") {
        if (event.repeat) return;
        this.spaceHeld = true;
      }
      this.stroke(this.cursor, this.cursor);
    }
  }

  // -- display ------------------------------------------------------------------------------

  /** Redraw at the next frame (many strokes per frame cost one redraw). */
  draw() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.drawNow();
    });
  }

  drawNow() {
    const { ctx, width, height } = this;
    ctx.globalAlpha = 1;
    if (this.background) {
      ctx.drawImage(this.background, 0, 0, width, height);
    } else {
      ctx.fillStyle = "#fff";
      ctx.fillRect(0, 0, width, height);
    }
    ctx.globalAlpha = LAYER_ALPHA;
    for (const id of this.order) ctx.drawImage(this.layers.get(id), 0, 0);
    ctx.globalAlpha = 1;
    if (this.cursorShown) {
      const pixel = 1 / this.shownBox().scale; // canvas pixels per screen pixel
      ctx.beginPath();
      ctx.arc(this.cursor.x, this.cursor.y, this.size() / 2, 0, Math.PI * 2);
      ctx.lineWidth = 2 * pixel;
      ctx.strokeStyle = "#000";
      ctx.stroke();
      ctx.lineWidth = pixel;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    }
  }
}
