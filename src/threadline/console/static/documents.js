// Documents: upload several files (a progress bar each), watch each one's state
// (RUNNING → COMPLETE / FAILED with the reason), attach them to the chat; and the page
// viewer a citation chip opens (GET /api/assets/{id}/pages/{n}.png).
import { api, blob, upload } from "./api.js";
import { el } from "./markdown.js";
import { state, clear, fail } from "./ui.js";

const $ = (id) => document.getElementById(id);
const watching = new Map(); // asset uuid → timer
// Uploaded from this page: a list requested before an upload ended may not hold it yet.
const uploaded = new Set();
let pageUrl = null;
let opener = null;

export function wire() {
  $("file-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    for (const file of files) uploadOne(file);
  });
  $("page-close").addEventListener("click", closeViewer);
  $("page-viewer").addEventListener("click", (event) => { if (event.target.id === "page-viewer") closeViewer(); });
  document.addEventListener("keydown", (event) => { if (event.key === "Escape") closeViewer(); });
}

export async function open() {
  await loadAssets();
  renderDocuments();
}

export async function loadAssets() {
  const { assets } = await api("GET", "/api/assets?limit=100");
  const listed = new Set(assets.map((a) => a.uuid));
  const newer = state.assets.filter((a) => uploaded.has(a.uuid) && !listed.has(a.uuid));
  state.assets = [...newer, ...assets];
  for (const asset of assets) if (asset.status === "RUNNING") watch(asset.uuid);
}

// One asset's newest state, in its place in the list (first if it is not there).
function put(asset) {
  const known = state.assets.some((a) => a.uuid === asset.uuid);
  state.assets = known
    ? state.assets.map((a) => (a.uuid === asset.uuid ? asset : a))
    : [asset, ...state.assets];
}

function statusCell(asset) {
  const text = asset.status === "FAILED" && asset.reason ? `FAILED: ${asset.reason}` : asset.status;
  return el("span", { class: `status ${asset.status.toLowerCase()}`, "data-testid": "doc-status",
    "data-asset": asset.uuid, text });
}

function renderDocuments() {
  const body = $("documents");
  clear(body);
  for (const asset of state.assets) {
    const attach = el("input", { type: "checkbox", "aria-label": `Use ${asset.name} in the chat`,
      "data-testid": "attach-doc", checked: state.attached.has(asset.uuid),
      disabled: asset.status === "FAILED" });
    attach.addEventListener("change", () => {
      if (attach.checked) state.attached.add(asset.uuid); else state.attached.delete(asset.uuid);
    });
    body.append(el("tr", { "data-asset": asset.uuid },
      el("td", { class: "name", "data-testid": "doc-name", text: asset.name }),
      el("td", {}, statusCell(asset)),
      el("td", { text: asset.pageCount ?? "" }),
      el("td", {}, attach)));
  }
  if (!state.assets.length) body.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "No documents yet." })));
}

async function uploadOne(file) {
  const bar = el("progress", { max: 1, value: 0, "data-testid": "upload-progress", "aria-label": `Uploading ${file.name}` });
  const note = el("span", { class: "small muted", text: "uploading" });
  const row = el("li", { class: "upload-row" }, el("span", { class: "name", text: file.name }), bar, note);
  $("uploads").prepend(row);
  try {
    const asset = await upload(file, (share) => { bar.value = share; });
    note.textContent = "uploaded";
    uploaded.add(asset.uuid);
    state.assets = [asset, ...state.assets.filter((a) => a.uuid !== asset.uuid)];
    renderDocuments();
    if (asset.status === "RUNNING") watch(asset.uuid);
  } catch (error) {
    note.textContent = `failed: ${error.message}`;
    note.classList.add("error");
  }
}

function watch(uuid) {
  if (watching.has(uuid)) return;
  const tick = async () => {
    try {
      const { asset } = await api("GET", `/api/assets/${encodeURIComponent(uuid)}`);
      put(asset);
      if (!document.getElementById("view-documents").hidden) renderDocuments();
      if (asset.status !== "RUNNING") { watching.delete(uuid); return; }
    } catch (error) {
      watching.delete(uuid);
      if (error.status !== 404) fail(error);
      else {
        uploaded.delete(uuid);
        state.assets = state.assets.filter((a) => a.uuid !== uuid);
        if (!$("view-documents").hidden) renderDocuments();
      }
      return;
    }
    watching.set(uuid, setTimeout(tick, 700));
  };
  watching.set(uuid, setTimeout(tick, 300));
}

// A document citation: {sourceId: document id, title, page, excerpt}.
export async function openCitation(citation) {
  let asset = state.assets.find((a) => String(a.documentId) === String(citation.sourceId));
  if (!asset) { await loadAssets(); asset = state.assets.find((a) => String(a.documentId) === String(citation.sourceId)); }
  if (!asset) throw new Error(`${citation.title}: not one of your uploads, so its pages cannot be shown`);
  const image = await blob(`/api/assets/${encodeURIComponent(asset.uuid)}/pages/${Number(citation.page)}.png`);
  if (pageUrl) URL.revokeObjectURL(pageUrl);
  pageUrl = URL.createObjectURL(image);
  const img = $("page-image");
  img.src = pageUrl;
  img.alt = `${asset.name}, page ${citation.page}`;
  $("page-caption").textContent = `${asset.name} · page ${citation.page}: “${(citation.excerpt || "").slice(0, 200)}”`;
  opener = document.activeElement;
  $("page-viewer").hidden = false;
  $("page-close").focus();
}

function closeViewer() {
  if ($("page-viewer").hidden) return;
  $("page-viewer").hidden = true;
  opener?.focus?.();
}
