// Small shared pieces of the console: its state, a toast, the clipboard.
export const state = {
  me: null,          // /api/me: {user, team}
  models: [],        // /api/models: chat models
  aliases: {},
  assets: [],        // /api/assets: the user's uploads
  attached: new Set(), // asset uuids attached to the next chat message
};

let toastTimer = null;
export function toast(message, isError = false) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.classList.toggle("error", isError);
  box.classList.add("shown");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => box.classList.remove("shown"), 4000);
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied");
  } catch {
    // No clipboard permission (plain http on another host): select it for Ctrl+C instead.
    toast("Copy was refused by the browser: select the text and press Ctrl+C", true);
  }
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

export function fail(error) {
  toast(error?.message || String(error), true);
}
