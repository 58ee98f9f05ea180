// Memories (the caller's own) and the team's brand voices: list, edit, delete.
import { api } from "./api.js";
import { el } from "./markdown.js";
import { clear, fail, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);

export function wire() {
  $("memory-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/api/memories", { content: $("memory-text").value });
      $("memory-text").value = "";
      await loadMemories();
    } catch (error) { fail(error); }
  });
  $("voice-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("voice-name").value, instructions: $("voice-instructions").value };
    const id = $("voice-id").value;
    try {
      if (id) await api("PATCH", `/api/brand-voices/${id}`, body);
      else await api("POST", "/api/brand-voices", body);
      clearVoice();
      toast("Brand voice saved");
      await loadVoices();
    } catch (error) { fail(error); }
  });
  $("voice-clear").addEventListener("click", clearVoice);
}

export async function open() {
  await Promise.all([loadMemories(), loadVoices()]);
}

function clearVoice() {
  $("voice-id").value = "";
  $("voice-name").value = "";
  $("voice-instructions").value = "";
}

async function loadMemories() {
  const { memories } = await api("GET", "/api/memories?limit=100");
  const list = $("memories");
  clear(list);
  for (const memory of memories) {
    const text = el("input", { value: memory.content, maxlength: 300, "aria-label": "Memory" });
    const save = el("button", { type: "button", text: "Save" });
    save.addEventListener("click", async () => {
      try {
        await api("PATCH", `/api/memories/${memory.uuid}`, { content: text.value });
        await loadMemories();
      } catch (error) { fail(error); }
    });
    const forget = el("button", { type: "button", class: "danger", text: "Delete" });
    forget.addEventListener("click", async () => {
      try { await api("DELETE", `/api/memories/${memory.uuid}`); await loadMemories(); } catch (error) { fail(error); }
    });
    list.append(el("li", { class: "row", "data-testid": "memory" }, text, save, forget,
      el("span", { class: "small muted", text: memory.source.toLowerCase() })));
  }
  if (!memories.length) list.append(el("li", { class: "muted", text: "No memories." }));
}

async function loadVoices() {
  const { brandVoices } = await api("GET", "/api/brand-voices?limit=100");
  const list = $("voices");
  clear(list);
  for (const voice of brandVoices) {
    const edit = el("button", { type: "button", text: "Edit" });
    edit.addEventListener("click", () => {
      $("voice-id").value = voice.uuid;
      $("voice-name").value = voice.name;
      $("voice-instructions").value = voice.instructions;
      $("voice-name").focus();
    });
    const remove = el("button", { type: "button", class: "danger", text: "Delete" });
    remove.addEventListener("click", async () => {
      try { await api("DELETE", `/api/brand-voices/${voice.uuid}`); await loadVoices(); } catch (error) { fail(error); }
    });
    list.append(el("li", { class: "row", "data-testid": "voice" },
      el("div", {}, el("strong", { text: voice.name }), el("p", { class: "small", text: voice.instructions })),
      edit, remove));
  }
  if (!brandVoices.length) list.append(el("li", { class: "muted", text: "No brand voices." }));
}
