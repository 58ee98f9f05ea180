// Markdown to DOM, safely: every piece of text becomes a text node (textContent), every
// element is made with createElement, and links keep only http(s) URLs. No HTML string from
// a model, a user or a document is ever parsed, so `<img onerror=...>` shows as text.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|(\[[^\]\n]+\]\((https?:\/\/[^\s)]+)\))/;

function inline(text) {
  const out = [];
  let rest = text;
  while (rest) {
    const match = INLINE.exec(rest);
    if (!match) { out.push(document.createTextNode(rest)); break; }
    if (match.index) out.push(document.createTextNode(rest.slice(0, match.index)));
    const token = match[0];
    if (match[1]) out.push(el("code", { text: token.slice(1, -1) }));
    else if (match[2]) out.push(el("strong", {}, inline(token.slice(2, -2))));
    else if (match[3]) out.push(el("em", {}, inline(token.slice(1, -1))));
    else {
      const label = token.slice(1, token.indexOf("]("));
      out.push(el("a", { href: match[5], target: "_blank", rel: "noopener noreferrer nofollow", text: label }));
    }
    rest = rest.slice(match.index + token.length);
  }
  return out;
}

function codeBlock(code, lang, onCopy) {
  const copy = el("button", { type: "button", class: "copy", "data-testid": "copy-code", text: "Copy" });
  copy.addEventListener("click", () => onCopy(code));
  return el("div", { class: "code" },
    el("div", { class: "code-head" }, el("span", { text: lang || "code" }), copy),
    el("pre", {}, el("code", { text: code })));
}

// Render `text` (markdown) into a fragment. `onCopy(text)` copies a code block.
export function renderMarkdown(text, onCopy) {
  const root = document.createDocumentFragment();
  const lines = text.replace(/\r\n/g, "\n").split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) root.append(el("p", {}, inline(paragraph.join(" "))));
    paragraph = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = /^\s*```\s*([\w+-]*)\s*$/.exec(line);
    if (fence) {
      flush();
      const body = [];
      i += 1;
      while (i < lines.length && !/^\s*```\s*$/.test(lines[i])) body.push(lines[i++]);
      i += 1; // the closing fence (or the end of a reply still streaming)
      root.append(codeBlock(body.join("\n"), fence[1], onCopy));
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
    if (heading) {
      flush();
      root.append(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2])));
    } else if (bullet || numbered) {
      flush();
      const list = el(bullet ? "ul" : "ol");
      const pattern = bullet ? /^\s*[-*]\s+(.*)$/ : /^\s*\d+[.)]\s+(.*)$/;
      let item;
      while (i < lines.length && (item = pattern.exec(lines[i]))) {
        list.append(el("li", {}, inline(item[1])));
        i += 1;
      }
      root.append(list);
      continue;
    } else if (!line.trim()) {
      flush();
    } else {
      paragraph.push(line);
    }
    i += 1;
  }
  flush();
  return root;
}
