// The console's only way to the server: Threadline's public HTTP APIs, with the API key
// from sessionStorage in the API-KEY header (never in a URL).
const KEY = "threadline.apiKey";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set key(value) { sessionStorage.setItem(KEY, value); },
  clear() { sessionStorage.removeItem(KEY); },
};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function headers(extra = {}) {
  return { "API-KEY": session.key || "", ...extra };
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = body?.error?.message || body?.message || body?.detail || message;
  } catch { /* not JSON */ }
  return new ApiError(response.status, message);
}

export async function api(method, path, body) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

export async function blob(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

// Upload one file to the Asset API, reporting progress (0..1); resolves with the asset.
export function upload(file, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/api/assets");
    request.setRequestHeader("API-KEY", session.key || "");
    request.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    request.onload = () => {
      let body = null;
      try { body = JSON.parse(request.responseText); } catch { /* not JSON */ }
      if (request.status >= 200 && request.status < 300) { onProgress(1); resolve(body.asset); }
      else reject(new ApiError(request.status, body?.error?.message || `HTTP ${request.status}`));
    };
    request.onerror = () => reject(new ApiError(0, "the upload was cut off"));
    const form = new FormData();
    form.append("asset", file, file.name);
    request.send(form);
  });
}

// Parse an SSE byte stream into {id, event, data} frames.
async function* frames(response, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const frame = { id: null, event: "message", data: "" };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") frame.id = text;
          else if (field === "event") frame.event = text;
          else if (field === "data") frame.data += (frame.data ? "\n" : "") + text;
        }
        if (frame.data || frame.id) yield frame;
      }
    }
  } finally {
    if (signal?.aborted) reader.cancel().catch(() => {});
  }
}

// A streamed 1min.ai reply that survives dropped connections: on a network error it
// reconnects to GET /api/chat-with-ai/{aiRecordId}/stream with Last-Event-ID (the last
// frame's id), so nothing is received twice or lost. Calls handlers.content(text),
// handlers.result(aiRecord), handlers.error(message), handlers.resuming(attempt) and
// handlers.started(aiRecordId) once the server named the reply.
export async function streamChat(body, handlers, signal) {
  let recordId = null;
  let lastId = null;
  let attempt = 0;
  let response = await fetch("/api/chat-with-ai?isStreaming=true", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify(body),
    signal,
  });
  if (!response.ok) throw await failure(response);
  recordId = response.headers.get("X-AI-Record-Id");
  if (recordId) handlers.started?.(recordId);
  for (;;) {
    try {
      for await (const frame of frames(response, signal)) {
        if (frame.id) lastId = frame.id;
        const data = frame.data ? JSON.parse(frame.data) : {};
        if (frame.event === "content") handlers.content(data.content || "");
        else if (frame.event === "result") handlers.result(data.aiRecord);
        else if (frame.event === "error") {
          handlers.error(data?.error?.message || "the reply failed");
          return;
        } else if (frame.event === "done") return;
      }
      if (!recordId) return;
      throw new Error("the stream ended before its done frame");
    } catch (error) {
      if (signal?.aborted) throw error;
      if (!recordId || attempt >= 8) throw error;
      attempt += 1;
      handlers.resuming?.(attempt);
      await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** (attempt - 1), 4000)));
      response = await resume(recordId, lastId, signal).catch((e) => {
        if (signal?.aborted) throw e;
        return null;
      });
      while (!response && attempt < 8) {
        attempt += 1;
        handlers.resuming?.(attempt);
        await new Promise((r) => setTimeout(r, Math.min(250 * 2 ** (attempt - 1), 4000)));
        response = await resume(recordId, lastId, signal).catch(() => null);
      }
      if (!response) throw error;
    }
  }
}

async function resume(recordId, lastId, signal) {
  const extra = { Accept: "text/event-stream" };
  if (lastId) extra["Last-Event-ID"] = lastId;
  const response = await fetch(`/api/chat-with-ai/${encodeURIComponent(recordId)}/stream`, {
    headers: headers(extra),
    signal,
  });
  if (!response.ok) throw await failure(response);
  return response;
}
