// The console's entry point: sign in, the header (user, org, role, credits), the tabs.
import { api, session } from "./api.js";
import { state, fail } from "./ui.js";
import * as playground from "./playground.js";
import * as documents from "./documents.js";
import * as library from "./library.js";
import * as admin from "./admin.js";

const views = { playground, documents, library, admin };
let current = null;

export async function refreshMe() {
  state.me = await api("GET", "/api/me");
  const { user, team } = state.me;
  document.getElementById("who-user").textContent = user.userName;
  document.getElementById("who-org").textContent = team ? team.name : user.teamId;
  document.getElementById("who-role").textContent = user.role;
  const left = Math.max(0, user.creditLimit - user.usedCredit);
  const credits = document.getElementById("user-credits");
  credits.textContent = `${left.toLocaleString("en")} credits left`;
  credits.title = `${user.usedCredit} of ${user.creditLimit} credits used`;
  document.querySelector('[data-view="admin"]').hidden = user.role !== "ADMIN";
  showFeatures(state.me.features || {});
}

// Settings of features the server may have off are taken out of the page when off.
function showFeatures(features) {
  if (!features.webSearch) document.getElementById("web-search")?.closest("label").remove();
}

async function show(name) {
  if (name === "admin" && state.me?.user.role !== "ADMIN") name = "playground";
  for (const tab of document.querySelectorAll("[data-view]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.view === name));
  }
  for (const key of Object.keys(views)) {
    document.getElementById(`view-${key}`).hidden = key !== name;
  }
  current = name;
  history.replaceState(null, "", `#${name}`);
  await views[name].open().catch(fail);
}

async function signIn(key) {
  session.key = key;
  try {
    await refreshMe();
  } catch (error) {
    session.clear();
    throw error;
  }
  document.getElementById("signin").hidden = true;
  document.getElementById("shell").hidden = false;
  const wanted = location.hash.slice(1);
  await show(wanted in views ? wanted : "playground");
}

function signOut() {
  session.clear();
  state.me = null;
  location.hash = "";
  location.reload();
}

function wire() {
  document.getElementById("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const input = document.getElementById("api-key");
    const error = document.getElementById("signin-error");
    error.textContent = "";
    try {
      await signIn(input.value.trim());
      input.value = "";
    } catch (e) {
      error.textContent = e.status === 401 ? "That key was not accepted." : e.message;
    }
  });
  document.getElementById("sign-out").addEventListener("click", signOut);
  for (const tab of document.querySelectorAll("[data-view]")) {
    tab.addEventListener("click", () => show(tab.dataset.view));
  }
  for (const view of Object.values(views)) view.wire({ refreshMe, show });
}

wire();
if (session.key) {
  signIn(session.key).catch(() => {
    document.getElementById("signin").hidden = false;
  });
}
