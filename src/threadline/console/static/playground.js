// The playground: conversations of every dialect (newest first, searchable by title), a
// chat with a model picker, replies streamed token by token (stop; resume on a dropped
// connection), rendered as safe markdown, each with its model, tokens, credits and sources.
import { api, streamChat } from "./api.js";
import { el, renderMarkdown } from "./markdown.js";
import { state, clear, copyText, fail, toast } from "./ui.js";
import { openCitation, loadAssets } from "./documents.js";

let ctx = null;
let conversationId = null;
let controller = null;
let running = null; // the reply being streamed: its aiRecord id, and whether Stop was pressed
let searchTimer = null;

const $ = (id) => document.getElementById(id);

export function wire(context) {
  ctx = context;
  $("new-chat").addEventListener("click", newChat);
  $("search").addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => loadConversations().catch(fail), 250);
  });
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); send(); }
  });
  $("stop").addEventListener("click", () => stopReply());
}

export async function open() {
  await Promise.all([loadModels(), loadConversations(), loadVoices(), loadAssets()]);
  showAttached();
}

async function loadModels() {
  if (state.models.length) return;
  const catalog = await api("GET", "/api/models");
  state.models = catalog.models.filter((m) => m.kind !== "images");
  state.aliases = catalog.aliases || {};
  const picker = $("model-picker");
  clear(picker);
  for (const model of state.models) {
    picker.append(el("option", { value: model.name, selected: model.default,
      text: model.default ? `${model.name} (default)` : model.name }));
  }
  for (const [alias, target] of Object.entries(state.aliases)) {
    if (!state.models.some((m) => m.name === target)) continue;
    picker.append(el("option", { value: alias, text: `${alias} → ${target} (alias)` }));
  }
}

async function loadVoices() {
  const select = $("brand-voice");
  const chosen = select.value;
  const { brandVoices } = await api("GET", "/api/brand-voices?limit=100");
  clear(select);
  select.append(el("option", { value: "", text: "none" }));
  for (const voice of brandVoices) {
    select.append(el("option", { value: voice.uuid, text: voice.name, selected: voice.uuid === chosen }));
  }
}

export async function loadConversations() {
  const search = $("search").value.trim();
  const query = search ? `&search=${encodeURIComponent(search)}` : "";
  const { conversations } = await api("GET", `/api/conversations?limit=100${query}`);
  const list = $("conversation-list");
  clear(list);
  for (const c of conversations) {
    const item = el("button", { type: "button", class: c.uuid === conversationId ? "active" : "",
      "data-conversation": c.uuid, title: `${c.type} · ${c.createdAt}` },
    el("span", { class: "title", text: c.title || "(untitled)" }),
    el("span", { class: "muted small", text: `${c.type.replaceAll("_", " ").toLowerCase()} · ${c.updatedAt.slice(0, 10)}` }));
    item.addEventListener("click", () => openConversation(c.uuid).catch(fail));
    list.append(el("li", {}, item));
  }
  if (!conversations.length) list.append(el("li", { class: "muted", text: search ? "No title matches." : "No conversations yet." }));
}

function newChat() {
  conversationId = null;
  clear($("messages"));
  for (const b of document.querySelectorAll("#conversation-list .active")) b.classList.remove("active");
  $("prompt").focus();
}

async function openConversation(id) {
  conversationId = id;
  for (const b of document.querySelectorAll("#conversation-list button")) {
    b.classList.toggle("active", b.dataset.conversation === id);
  }
  const { conversation } = await api("GET", `/api/conversations/${id}?limit=100`);
  const box = $("messages");
  clear(box);
  const records = [];
  for (const m of conversation.messages) {
    if (m.role === "user") box.append(userMessage(m.content));
    else {
      const reply = replyMessage(m.model);
      reply.setText(m.content);
      if (m.status === "FAILED") reply.setNote("failed");
      box.append(reply.node);
      if (m.aiRecordId) records.push([reply, m.aiRecordId]);
    }
  }
  // Each reply's figures and sources come from its aiRecord (the last 20, in parallel).
  await Promise.all(records.slice(-20).map(async ([reply, rid]) => {
    try { reply.setRecord((await api("GET", `/api/chat-with-ai/${rid}`)).aiRecord); } catch { /* gone */ }
  }));
  box.scrollTop = box.scrollHeight;
}

function userMessage(text) {
  return el("div", { class: "message user", "data-testid": "user-message" },
    el("div", { class: "bubble" }, renderMarkdown(text, copyText)));
}

function replyMessage(model) {
  const body = el("div", { class: "bubble" });
  const meta = el("div", { class: "meta small muted", "data-testid": "reply-meta", text: model || "" });
  const sources = el("div", { class: "chips" });
  const node = el("div", { class: "message assistant", "data-testid": "reply" }, body, sources, meta);
  let text = "";
  let note = "";
  const paint = () => {
    clear(body);
    body.append(renderMarkdown(text, copyText));
  };
  return {
    node,
    text: () => text,
    add(piece) { text += piece; paint(); },
    setText(value) { text = value; paint(); },
    setNote(value) { note = value; meta.dataset.note = value; meta.textContent = `${meta.textContent.split(" · [")[0]} · [${note}]`; },
    setRecord(record) {
      const usage = record.usage || {};
      meta.textContent = `${record.model} · ${usage.inputTokens ?? 0} in / ${usage.outputTokens ?? 0} out tokens · ${usage.credits ?? 0} credits`;
      if (note) meta.textContent += ` · [${note}]`;
      clear(sources);
      for (const citation of record.aiRecordDetail?.citations || []) sources.append(citationChip(citation));
    },
  };
}

function citationChip(citation) {
  const label = citation.page ? `${citation.title} · p. ${citation.page}` : citation.title || citation.url;
  const chip = el("button", { type: "button", class: "chip", "data-testid": "citation",
    title: citation.excerpt || "" }, el("strong", { text: label }),
  el("span", { class: "excerpt", text: (citation.excerpt || "").slice(0, 90) }));
  chip.addEventListener("click", () => {
    if (citation.page) openCitation(citation).catch(fail);
    else if (citation.url && /^https?:\/\//.test(citation.url)) window.open(citation.url, "_blank", "noopener");
  });
  return chip;
}

export function showAttached() {
  const box = $("attached");
  clear(box);
  for (const uuid of state.attached) {
    const asset = state.assets.find((a) => a.uuid === uuid);
    if (!asset) continue;
    const remove = el("button", { type: "button", class: "link", "aria-label": `Detach ${asset.name}`, text: "×" });
    remove.addEventListener("click", () => { state.attached.delete(uuid); showAttached(); });
    box.append(el("span", { class: "chip static", "data-testid": "attached-doc" }, `📎 ${asset.name} `, remove));
  }
}

// Stop: the server ends the reply where it is (POST /api/chat-with-ai/{id}/stop) and the
// stream goes on to its result, so the reply shows what it cost; if that call fails, the
// browser stops reading.
async function stopReply() {
  if (!controller || !running) return;
  running.stopped = true;
  $("stop").disabled = true;
  if (!running.id) { controller.abort(); return; }
  try {
    await api("POST", `/api/chat-with-ai/${encodeURIComponent(running.id)}/stop`);
  } catch {
    controller.abort();
  }
}

function settings() {
  const limit = Number($("history-limit").value || 10);
  const out = { historySettings: { isMixed: false, historyMessageLimit: Math.max(0, Math.min(limit, 100)) } };
  if ($("with-memories").checked) out.withMemories = true;
  if ($("web-search")?.checked) out.webSearchSettings = { webSearch: true, numOfSite: 3, maxWord: 1000 };
  return out;
}

async function send() {
  const prompt = $("prompt").value.trim();
  if (!prompt || controller) return;
  const model = $("model-picker").value;
  try {
    if (!conversationId) {
      const title = prompt.replace(/\s+/g, " ").slice(0, 80);
      const { conversation } = await api("POST", "/api/conversations",
        { type: "UNIFY_CHAT_WITH_AI", title, model });
      conversationId = conversation.uuid;
    }
  } catch (error) { fail(error); return; }
  const box = $("messages");
  box.append(userMessage(prompt));
  const reply = replyMessage(model);
  box.append(reply.node);
  $("prompt").value = "";
  const promptObject = { prompt, conversationId, settings: settings() };
  if (state.attached.size) promptObject.attachments = { files: [...state.attached] };
  const body = { type: "UNIFY_CHAT_WITH_AI", model, promptObject };
  if ($("brand-voice").value) body.brandVoiceId = $("brand-voice").value;
  controller = new AbortController();
  running = { id: null, stopped: false };
  $("send").hidden = true;
  $("stop").hidden = false;
  try {
    await streamChat(body, {
      started: (id) => { running.id = id; },
      content: (piece) => { reply.add(piece); box.scrollTop = box.scrollHeight; },
      result: (record) => reply.setRecord(record),
      error: (message) => { reply.setNote("failed"); toast(message, true); },
      resuming: () => reply.setNote("reconnecting"),
    }, controller.signal);
    if (running.stopped) reply.setNote("stopped");
    else if (reply.node.querySelector("[data-note=reconnecting]")) reply.setNote("resumed");
  } catch (error) {
    if (controller.signal.aborted || running.stopped) reply.setNote("stopped");
    else { reply.setNote("failed"); fail(error); }
  } finally {
    controller = null;
    running = null;
    $("send").hidden = false;
    $("stop").hidden = true;
    $("stop").disabled = false;
    $("prompt").focus();
  }
  await Promise.all([ctx.refreshMe(), loadConversations()]).catch(fail);
}
