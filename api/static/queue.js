// The queue panel: the user's jobs with live progress and previews from the events stream,
// cancel, the result with a download link, "re-render with new seed" and "duplicate into editor".

import { FINAL, cancelJob, fetchResult, followEvents, getKey, listJobs } from "./api.js";
import { element } from "./dom.js";

const CANCELABLE = new Set(["queued", "running"]);
/** Streams open at once: a browser opens about 6 connections per host, a stream holds one. */
const MAX_STREAMS = 3;
/** Milliseconds between two reads of the job list (jobs without a stream update from it). */
const REFRESH_MS = 3000;
const LIST_LIMIT = 20;
const EXTENSIONS = { png: "png", webp: "webp", jpeg: "jpg" };

export class Queue {
  /** `handlers`: onRerender(job), onDuplicate(job), report(message), fail(error). */
  constructor(list, emptyNote, handlers) {
    this.list = list;
    this.emptyNote = emptyNote;
    this.handlers = handlers;
    this.cards = new Map(); // job id -> card
    this.timer = null;
  }

  start() {
    this.stop();
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
    this.timer = null;
  }

  /** Forget every card (another key: another tenant's jobs). */
  reset() {
    for (const card of this.cards.values()) card.stream?.abort();
    this.cards.clear();
    delete this.list.dataset.loaded;
    this.list.replaceChildren();
    this.emptyNote.hidden = false;
  }

  async refresh() {
    const key = getKey();
    let answer;
    try {
      answer = await listJobs(LIST_LIMIT);
    } catch (error) {
      if (key !== getKey()) return; // asked with a key the user has replaced since
      this.stop(); // a wrong key or a stopped farm: Refresh (or Use key) starts again
      this.handlers.fail(error);
      return;
    }
    if (key !== getKey()) return; // another key's (another tenant's) jobs
    for (const job of answer.jobs) this.show(job);
    this.order();
    this.list.dataset.loaded = "true"; // for scripts and tests: the list has been read
  }

  /** A job just submitted: at the top, followed at once. */
  added(job) {
    this.show(job);
    this.order();
    this.cards.get(job.id).item.scrollIntoView({ block: "nearest" });
  }

  show(job) {
    let card = this.cards.get(job.id);
    if (!card) {
      card = this.card(job);
      this.cards.set(job.id, card);
    } else if (card.stream && !FINAL.has(job.status)) {
      return; // the stream is fresher than the list
    } else {
      card.job = { ...card.job, ...job };
    }
    this.update(card);
    this.follow(card);
  }

  order() {
    const cards = [...this.cards.values()].sort((a, b) =>
      String(b.job.created_at).localeCompare(String(a.job.created_at)),
    );
    this.list.replaceChildren(...cards.map((c) => c.item));
    this.emptyNote.hidden = cards.length > 0;
  }

  follow(card) {
    if (card.stream || FINAL.has(card.job.status)) return;
    const streams = [...this.cards.values()].filter((c) => c.stream).length;
    if (streams >= MAX_STREAMS) return; // the list refresh updates it until a stream is free
    const stream = new AbortController();
    card.stream = stream;
    const onEvent = (name, data) => {
      if (name === "status") card.job.status = data.status;
      else if (name === "progress") card.job.progress = data;
      else if (name === "job") card.job = data;
      this.update(card);
    };
    followEvents(card.job.id, onEvent, stream.signal)
      .catch((error) => {
        if (error.name !== "AbortError") console.warn(`events of ${card.job.id}:`, error);
      })
      .finally(() => {
        card.stream = null;
        if (!FINAL.has(card.job.status)) return; // the next refresh follows it again
        for (const other of this.cards.values()) this.follow(other);
      });
  }

  card(job) {
    const short = job.id.slice(-8);
    const item = element("li", { className: "job", id: `job-${job.id}` });
    item.dataset.jobId = job.id;
    const head = element("div", { className: "job-head" });
    const title = element("span", { className: "job-id", textContent: job.id });
    const status = element("span", { className: "job-status" });
    head.append(title, status);
    const meta = element("p", { className: "job-meta" });
    const progress = element("progress", { max: 1 });
    progress.setAttribute("aria-label", `Progress of job ${short}`);
    const progressText = element("p", { className: "job-meta job-progress" });
    const preview = element("img", { alt: `Preview of job ${short}`, hidden: true });
    preview.className = "job-preview";
    const error = element("p", { className: "job-error", hidden: true });
    const result = element("img", { alt: `Result of job ${short}`, hidden: true });
    result.className = "job-result";
    const buttons = element("div", { className: "buttons" });
    const download = element("a", { textContent: "Download image", hidden: true });
    download.className = "job-download";
    const cancel = button("Cancel", `Cancel job ${short}`, "job-cancel");
    const rerender = button("Re-render with new seed", `Re-render job ${short} with a new seed`,
      "job-rerender");
    const duplicate = button("Duplicate into editor", `Open job ${short}'s spec in the editor`,
      "job-duplicate");
    buttons.append(download, cancel, rerender, duplicate);
    item.append(head, meta, progress, progressText, preview, error, result, buttons);
    const card = {
      job, item, status, meta, progress, progressText, preview, error, result, download, cancel,
      stream: null, resultState: "none",
      live: !FINAL.has(job.status), // seen unfinished: its end is announced
    };
    cancel.addEventListener("click", () => this.cancel(card));
    rerender.addEventListener("click", () => this.handlers.onRerender(card.job));
    duplicate.addEventListener("click", () => this.handlers.onDuplicate(card.job));
    return card;
  }

  update(card) {
    const { job } = card;
    card.status.textContent = job.status;
    card.status.dataset.status = job.status;
    card.item.dataset.status = job.status;
    const spec = job.spec || {};
    card.meta.textContent = `${job.model || spec.model || "?"} · ${spec.width}×${spec.height}` +
      ` · seed ${spec.seed}`;
    const p = job.progress;
    if (p && p.total) {
      card.progress.max = p.total;
      card.progress.value = p.step;
      const eta = job.status === "running" && typeof p.eta_seconds === "number"
        && p.step < p.total ? `, about ${p.eta_seconds.toFixed(1)} s left` : "";
      card.progressText.textContent = `step ${p.step} of ${p.total}${eta}`;
    } else if (job.status === "queued") {
      card.progress.removeAttribute("value"); // indeterminate
      card.progressText.textContent = "waiting in the queue";
    } else {
      card.progressText.textContent = "";
    }
    if (p && p.preview && !FINAL.has(job.status)) {
      card.preview.src = p.preview;
      card.preview.hidden = false;
    } else {
      card.preview.hidden = true;
    }
    card.cancel.hidden = !CANCELABLE.has(job.status) && job.status !== "canceling";
    card.cancel.disabled = job.status === "canceling";
    card.error.hidden = !job.error;
    if (job.error) card.error.textContent = `${job.error.code}: ${job.error.message}`;
    if (job.status === "succeeded" && card.resultState === "none") this.loadResult(card);
    else if (card.live && (job.status === "failed" || job.status === "canceled")) {
      card.live = false; // announced once
      const why = job.error ? `: ${job.error.code}: ${job.error.message}` : "";
      this.handlers.report(`Job ${job.id} ${job.status}${why}.`);
    }
  }

  async loadResult(card) {
    const { job } = card;
    card.resultState = "loading";
    try {
      const blob = await fetchResult(job.id);
      const url = URL.createObjectURL(blob);
      card.result.src = url;
      card.result.hidden = false;
      card.download.href = url;
      card.download.download = `${job.id}.${EXTENSIONS[job.result?.format] || "png"}`;
      card.download.hidden = false;
      card.resultState = "loaded";
      if (card.live) {
        card.live = false;
        this.handlers.report(`Job ${job.id} succeeded; its image is in the queue panel.`);
      }
    } catch (error) {
      card.resultState = "none";
      card.error.hidden = false;
      const cors = error.status === 0
        ? " (with results in S3, the bucket must allow GET from this page's origin: CORS)"
        : "";
      card.error.textContent = `the image could not be fetched: ${error.message}${cors}`;
    }
  }

  async cancel(card) {
    card.cancel.disabled = true;
    try {
      card.job = { ...card.job, ...(await cancelJob(card.job.id)) };
      this.update(card);
      this.handlers.report(`Job ${card.job.id} is ${card.job.status}.`);
    } catch (error) {
      card.cancel.disabled = false;
      this.handlers.fail(error);
    }
  }
}

function button(text, label, className) {
  const b = element("button", { type: "button", textContent: text, className });
  b.setAttribute("aria-label", label);
  return b;
}
