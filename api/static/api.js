// The v1 REST API as the page uses it: the key from session storage, errors as ApiError,
// and the events stream read with fetch (EventSource cannot send the Authorization header).

const KEY_STORAGE = "regionfarm.apiKey";

export function getKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

/** A non-2xx answer (or no answer): the contract's error code, message and details. */
export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  /** One line per problem, with the field path when the API named one. */
  describe(nameOf = (loc) => loc.join(".")) {
    const lines = [`${this.message} (${this.status || "no answer"} ${this.code})`];
    if (this.details.length > 1 || (this.details[0] && this.details[0].loc?.length)) {
      for (const detail of this.details) {
        const where = detail.loc && detail.loc.length ? `${nameOf(detail.loc)}: ` : "";
        lines.push(`${where}${detail.msg}`);
      }
    }
    if (this.status === 0) lines.push("Once it answers again, press Refresh.");
    if (this.status === 401) {
      lines.push("Type the API key that `regionfarm keys add TENANT` printed, then Use key.");
    }
    return lines.join("\n");
  }
}

function withKey(key, headers = {}) {
  return key ? { ...headers, Authorization: `Bearer ${key}` } : { ...headers };
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error;
  if (error) return new ApiError(response.status, error.code, error.message, error.details || []);
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

/** fetch with the key; resolves to the Response when it is 2xx, else throws ApiError. */
export async function call(method, path, { body, headers, signal } = {}) {
  const key = getKey();
  let response;
  try {
    response = await fetch(path, { method, body, signal, headers: withKey(key, headers) });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "unreachable",
      `the farm does not answer (${error.message}): is \`regionfarm up\` still running?`);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    error.key = key; // a 401 for a key the user has replaced since is no news
    throw error;
  }
  return response;
}

export async function submitJob(specText) {
  const response = await call("POST", "/v1/jobs", {
    body: specText,
    // A fresh key per click: a retried request never queues the same job twice.
    headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
  });
  return response.json();
}

export async function getJob(jobId) {
  return (await call("GET", `/v1/jobs/${encodeURIComponent(jobId)}`)).json();
}

export async function listJobs(limit = 20) {
  return (await call("GET", `/v1/jobs?limit=${limit}`)).json();
}

export async function cancelJob(jobId) {
  return (await call("DELETE", `/v1/jobs/${encodeURIComponent(jobId)}`)).json();
}

export async function listModels() {
  return (await call("GET", "/v1/models")).json();
}

/** The result image of a succeeded job, as a Blob (the API answers bytes or a redirect). */
export async function fetchResult(jobId) {
  return (await call("GET", `/v1/jobs/${encodeURIComponent(jobId)}/result`)).blob();
}

/** A job in one of these has ended: its stream's last event is the `job` one. */
export const FINAL = new Set(["succeeded", "failed", "canceled"]);
/** Reconnects in a row to a job's events stream before the page polls the job instead. */
const STREAM_RETRIES = 5;
/** Answers that another try may fix: no answer, over the stream cap, a proxy or farm down. */
const RETRYABLE = new Set([0, 429, 502, 503, 504]);
/** Milliseconds before the first reconnect when the stream sent no `retry:`. */
const DEFAULT_RETRY_MS = 1000;
/** Milliseconds of the longest pause before a reconnect. */
const MAX_PAUSE_MS = 30000;
/** Milliseconds between two reads of a job whose stream could not be resumed. */
const POLL_MS = 2000;

/**
 * Follow a job's Server-Sent Events until its final `job` event or until `signal` aborts;
 * `onEvent(name, data)` gets each `status`, `progress` and the final `job`. A stream that drops
 * is opened again with Last-Event-ID (the farm sends what was missed, nothing twice), up to
 * STREAM_RETRIES times in a row with a growing pause; then the job is read every POLL_MS, each
 * answer given as a `job` event, until it ends.
 */
export async function followEvents(jobId, onEvent, signal) {
  const cursor = { lastId: null, retryMs: DEFAULT_RETRY_MS };
  let failures = 0;
  for (;;) {
    const before = cursor.lastId;
    try {
      if (await readStream(jobId, cursor, onEvent, signal)) return;
    } catch (error) {
      if (error.name === "AbortError") throw error;
      if (error instanceof ApiError && !RETRYABLE.has(error.status)) throw error;
      // else no answer, or the connection broke mid-stream (a TypeError from the reader)
    }
    if (cursor.lastId !== before) failures = 0; // it got further: count again from here
    if (failures === STREAM_RETRIES) break;
    await pause(Math.min(cursor.retryMs * 2 ** failures, MAX_PAUSE_MS), signal);
    failures += 1;
  }
  for (;;) {
    const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
    const job = await (await call("GET", path, { signal })).json();
    onEvent("job", job);
    if (FINAL.has(job.status)) return;
    await pause(POLL_MS, signal);
  }
}

/** One connection of the stream; true once the final `job` event came. */
async function readStream(jobId, cursor, onEvent, signal) {
  const headers = { Accept: "text/event-stream" };
  if (cursor.lastId !== null) headers["Last-Event-ID"] = cursor.lastId;
  const response = await call("GET", `/v1/jobs/${encodeURIComponent(jobId)}/events`, {
    headers,
    signal,
  });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    buffer = buffer.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = parseEvent(block, cursor);
      if (!event) continue;
      onEvent(event.name, event.data);
      if (event.name === "job" && FINAL.has(event.data.status)) {
        reader.cancel().catch(() => {});
        return true;
      }
    }
  }
}

/** One block of the stream: its event, or null; its `id:` and `retry:` go into `cursor`. */
function parseEvent(block, cursor) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue; // a comment: the keep-alive
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
    else if (field === "id" && !value.includes("\0")) cursor.lastId = value;
    else if (field === "retry" && /^\d+$/.test(value)) cursor.retryMs = Number(value);
  }
  if (!data.length) return null;
  return { name, data: JSON.parse(data.join("\n")) };
}

/** Resolves after `ms`, or rejects with an AbortError when `signal` aborts first. */
function pause(ms, signal) {
  return new Promise((resolve, reject) => {
    const aborted = () => new DOMException("the wait was aborted", "AbortError");
    if (signal?.aborted) {
      reject(aborted());
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(aborted());
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
