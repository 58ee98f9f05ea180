// Admin (ADMIN role): users and credit limits, API keys (a new one shown once), orgs, and
// usage over 30 days as a chart (GET /api/admin/usage) with a CSV export.
import { api, blob } from "./api.js";
import { el } from "./markdown.js";
import { state, clear, copyText, fail, toast } from "./ui.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f5bd3", "#d3722f", "#2f9e6e", "#b03fa8", "#8a8a2a", "#c23b3b", "#3aa0b8", "#6b5bd3"];
let users = [];
let usage = null;

export function wire() {
  $("user-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { name: $("user-name").value, role: $("user-role").value };
    if ($("user-limit").value) body.creditLimit = Number($("user-limit").value);
    try { await api("POST", "/api/admin/users", body); $("user-name").value = ""; await loadUsers(); } catch (error) { fail(error); }
  });
  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const issued = await api("POST", "/api/admin/keys", { userId: $("key-user").value, name: $("key-name").value || "console" });
      $("key-value").textContent = issued.apiKey.key;
      $("new-key-box").hidden = false;
      await loadKeys();
    } catch (error) { fail(error); }
  });
  $("copy-key").addEventListener("click", () => copyText($("key-value").textContent));
  $("org-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const made = await api("POST", "/api/admin/orgs", { name: $("org-name").value });
      $("org-name").value = "";
      $("key-value").textContent = made.apiKey.key;
      $("new-key-box").hidden = false;
      toast(`Org ${made.org.name} made; its admin's key is shown once above`);
      await loadOrgs();
    } catch (error) { fail(error); }
  });
  $("usage-by").addEventListener("change", drawUsage);
  $("usage-csv").addEventListener("click", exportCsv);
}

export async function open() {
  $("new-key-box").hidden = true;
  await loadUsers();
  await Promise.all([loadKeys(), loadOrgs(), loadUsage()]);
}

async function loadUsers() {
  users = (await api("GET", "/api/admin/users")).users;
  const body = $("users");
  clear(body);
  const keyUser = $("key-user");
  clear(keyUser);
  for (const user of users) {
    keyUser.append(el("option", { value: user.userId, text: user.userName, selected: user.userId === state.me.user.userId }));
    const limit = el("input", { type: "number", min: 0, value: user.creditLimit, class: "narrow", "aria-label": `Credit limit of ${user.userName}` });
    const save = el("button", { type: "button", text: "Set limit" });
    save.addEventListener("click", async () => {
      try {
        await api("PATCH", `/api/admin/users/${user.userId}`, { creditLimit: Number(limit.value) });
        toast(`Credit limit of ${user.userName} set`);
        await loadUsers();
      } catch (error) { fail(error); }
    });
    body.append(el("tr", { "data-user": user.userId },
      el("td", { text: user.userName }), el("td", { text: `${user.role}${user.status === "ACTIVE" ? "" : " · " + user.status}` }),
      el("td", {}, `${user.usedCredit} / `, limit), el("td", {}, save)));
  }
}

async function loadKeys() {
  const { apiKeys } = await api("GET", "/api/admin/keys");
  const names = Object.fromEntries(users.map((u) => [u.userId, u.userName]));
  const body = $("keys");
  clear(body);
  for (const key of apiKeys) {
    const revoke = el("button", { type: "button", class: "danger", "data-testid": "revoke-key", text: "Revoke", disabled: !!key.revokedAt });
    revoke.addEventListener("click", async () => {
      try { await api("DELETE", `/api/admin/keys/${key.id}`); toast(`Key ${key.prefix}… revoked`); await loadKeys(); } catch (error) { fail(error); }
    });
    body.append(el("tr", { "data-key": key.id, "data-prefix": key.prefix },
      el("td", {}, el("code", { text: `${key.prefix}…` }), ` ${key.name}`),
      el("td", { text: names[key.userId] || key.userId }),
      el("td", { text: key.revokedAt ? `revoked ${key.revokedAt.slice(0, 10)}` : key.createdAt.slice(0, 10) }),
      el("td", {}, revoke)));
  }
}

async function loadOrgs() {
  const { orgs } = await api("GET", "/api/admin/orgs");
  const list = $("orgs");
  clear(list);
  for (const org of orgs) list.append(el("li", { text: org.isSystem ? `${org.name} (system)` : org.name }));
  $("org-form").hidden = !orgs.some((o) => o.isSystem && o.id === state.me.user.teamId);
}

async function loadUsage() {
  usage = await api("GET", "/api/admin/usage?days=30");
  drawUsage();
  const body = $("usage-rows");
  clear(body);
  for (const row of [...usage.usage].reverse()) {
    body.append(el("tr", {}, el("td", { text: row.day }), el("td", { text: row.model }),
      el("td", { text: row.userName || row.userId }), el("td", { text: row.requests }),
      el("td", { text: `${row.inputTokens} / ${row.outputTokens}` }), el("td", { text: row.credits })));
  }
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Stacked bars: credits per day, one colour per model (or user); requests in the tooltip.
function drawUsage() {
  const box = $("usage-chart");
  clear(box);
  if (!usage) return;
  const by = $("usage-by").value;
  const seriesOf = (row) => (by === "user" ? row.userName || row.userId : row.model);
  const series = [...new Set(usage.usage.map(seriesOf))];
  const metric = usage.totals.credits > 0 ? "credits" : "requests";
  const perDay = new Map(usage.days.map((d) => [d, new Map()]));
  for (const row of usage.usage) {
    const day = perDay.get(row.day);
    if (!day) continue;
    const name = seriesOf(row);
    const cell = day.get(name) || { credits: 0, requests: 0, tokens: 0 };
    cell.credits += row.credits; cell.requests += row.requests; cell.tokens += row.inputTokens + row.outputTokens;
    day.set(name, cell);
  }
  const totals = [...perDay.values()].map((d) => [...d.values()].reduce((s, c) => s + c[metric], 0));
  const max = Math.max(1, ...totals);
  const width = 600, height = 220, left = 40, bottom = 24;
  const barWidth = (width - left) / usage.days.length;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "bars",
    "aria-label": `${metric} per day for the last ${usage.days.length} days` });
  chart.append(svg("text", { x: 0, y: 12, class: "axis" }, String(max)), svg("text", { x: 0, y: height - bottom, class: "axis" }, "0"));
  usage.days.forEach((day, i) => {
    let y = height - bottom;
    for (const [name, cell] of perDay.get(day)) {
      const h = (cell[metric] / max) * (height - bottom - 16);
      y -= h;
      const rect = svg("rect", { x: left + i * barWidth + 1, y, width: Math.max(barWidth - 2, 1), height: h,
        fill: COLORS[series.indexOf(name) % COLORS.length], "data-day": day, "data-series": name });
      rect.append(svg("title", {}, `${day} · ${name}: ${cell.credits} credits, ${cell.tokens} tokens, ${cell.requests} requests`));
      chart.append(rect);
    }
    const last = usage.days.length - 1;
    if ((i % 7 === 0 && last - i >= 4) || i === last) {
      const end = i === last; // the last label ends at the chart's right edge
      chart.append(svg("text", { x: end ? width - 2 : left + i * barWidth, y: height - 6,
        class: "axis", "text-anchor": end ? "end" : "start" }, day.slice(5)));
    }
  });
  const legend = el("ul", { class: "legend" });
  series.forEach((name, i) => {
    const rows = usage.usage.filter((r) => seriesOf(r) === name);
    const sum = (k) => rows.reduce((s, r) => s + r[k], 0);
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[i % COLORS.length]; // CSSOM: no inline style attribute (CSP)
    legend.append(el("li", { "data-testid": "usage-series" }, swatch,
      `${name}: ${sum("credits")} credits, ${sum("inputTokens") + sum("outputTokens")} tokens, ${sum("requests")} requests`));
  });
  box.append(el("p", { class: "small muted", text: `${metric} per day, ${usage.from} to ${usage.to} (UTC)` }), chart, legend);
  if (!series.length) box.append(el("p", { class: "muted", text: "No requests in these 30 days." }));
}

async function exportCsv() {
  try {
    const file = await blob("/api/admin/usage.csv?days=30");
    const url = URL.createObjectURL(file);
    const link = el("a", { href: url, download: `threadline-usage-${usage?.to || "30d"}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  } catch (error) { fail(error); }
}
