// The exercise editor of the admin's change and add forms: CodeMirror 5 on the form's
// YAML textarea (which stays the form's field: CodeMirror copies the text back into it on
// submit), problems marked at their lines, and a live preview beside it (the diagram, laid
// out by the lab page's own modules, and the steps in each language), refreshed 500 ms
// after typing stops. See docs/front-end.md, "The exercise editor".
import { DENSITY, PAD, layoutGraph } from "../lab/layout.js";
import { fitText, nameOf } from "../lab/format.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const DELAY_MS = 500;
const PROBLEM_GUTTER = "editor-problems";
const MIN_SCALE = 0.75; // of the drawing's units: names at about 10 px

const textarea = document.querySelector("textarea[data-editor=yaml]");
const template = document.getElementById("exercise-preview-template");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null) continue;
    if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  node.append(...children.filter((c) => c != null));
  return node;
}

function svgEl(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, v);
  if (parent) parent.append(node);
  return node;
}

if (textarea && template && window.CodeMirror) start();

function start() {
  const editor = window.CodeMirror.fromTextArea(textarea, {
    mode: "yaml",
    lineNumbers: true,
    indentUnit: 2,
    tabSize: 2,
    indentWithTabs: false,
    matchBrackets: true,
    // Step texts are long Markdown lines: wrapped, so the editor needs no sideways scrolling.
    lineWrapping: true,
    foldGutter: true,
    foldOptions: { rangeFinder: window.CodeMirror.fold.indent },
    gutters: ["CodeMirror-linenumbers", PROBLEM_GUTTER, "CodeMirror-foldgutter"],
    extraKeys: {
      // YAML does not allow tabs for indentation: Tab indents with two spaces.
      Tab: (cm) => cm.execCommand(cm.somethingSelected() ? "indentMore" : "insertSoftTab"),
      "Shift-Tab": (cm) => cm.execCommand("indentLess"),
    },
  });

  // Editor and preview side by side (stacked on a narrow screen, editor.css).
  const split = el("div", { class: "exercise-editor", id: "exercise-editor" });
  const wrapper = editor.getWrapperElement();
  wrapper.replaceWith(split);
  split.append(el("div", { class: "exercise-editor-code" }, wrapper));
  const preview = template.content.firstElementChild.cloneNode(true);
  split.append(preview);
  editor.refresh();

  const url = textarea.dataset.previewUrl;
  const form = textarea.form;
  const csrf = form?.querySelector("input[name=csrfmiddlewaretoken]")?.value || "";
  const $ = (role) => preview.querySelector(`[data-role=${role}]`);
  const statusEl = $("status");
  const problemsEl = $("problems");
  const svg = $("diagram");
  const stepsEl = $("steps");
  const titleEl = $("title");
  const elk = new window.ELK();
  const state = { language: document.documentElement.lang?.split("-")[0] || "en", last: null, request: 0 };
  window.exerciseEditor = { editor, state, get drawn() { return drawn; } };

  // ---------------------------------------------------------------- problems at their lines
  let marked = [];
  function markProblems(problems) {
    editor.operation(() => {
      editor.clearGutter(PROBLEM_GUTTER);
      for (const handle of marked) editor.removeLineClass(handle, "background", "editor-problem-line");
      marked = [];
      const byLine = new Map();
      for (const p of problems) {
        if (p.line == null || p.line > editor.lineCount()) continue;
        if (!byLine.has(p.line)) byLine.set(p.line, []);
        byLine.get(p.line).push(p.text);
      }
      for (const [line, texts] of byLine) {
        const marker = el("span", { class: "editor-problem-marker", title: texts.join("\n"), "data-line": line }, "●");
        editor.setGutterMarker(line - 1, PROBLEM_GUTTER, marker);
        marked.push(editor.addLineClass(line - 1, "background", "editor-problem-line"));
      }
    });
  }

  function showProblems(problems) {
    problemsEl.replaceChildren(
      ...problems.map((p) => {
        const item = el("li", { "data-line": p.line ?? "" }, p.text);
        if (p.line != null) {
          item.classList.add("is-located");
          item.addEventListener("click", () => {
            editor.focus();
            editor.setCursor({ line: p.line - 1, ch: Math.max(0, (p.column || 1) - 1) });
          });
        }
        return item;
      }),
    );
    problemsEl.hidden = !problems.length;
  }

  // ---------------------------------------------------------------- the diagram
  const measureCtx = document.createElement("canvas").getContext("2d");
  const FONT = getComputedStyle(preview).fontFamily || "sans-serif";
  const LABEL_FONT = `600 13px ${FONT}`;
  const EDGE_FONT = `10.5px ui-monospace, monospace`;
  const textWidth = (text, font) => {
    measureCtx.font = font;
    return measureCtx.measureText(text).width;
  };
  const nodeName = (n) =>
    n.id === "x:" ? gettext("(default)") : n.id === "p:@you" ? gettext("you") : n.label || nameOf(n.id);
  const nodeDetail = (n) => (n.id === "p:@you" ? gettext("publish form") : n.detail || "");
  const edgeLabel = (e) =>
    e.kind === "alternate" ? gettext("unroutable") : e.label === "(no key)" ? gettext("(no key)") : e.label;
  const measure = {
    nodeWidth: (n) => Math.max(textWidth(nodeName(n), LABEL_FONT), textWidth(nodeDetail(n), `11px ${FONT}`)) + 28,
    edgeLabelWidth: (label) => textWidth(label, EDGE_FONT) + 12,
  };

  function draw(layout) {
    svg.replaceChildren();
    const { x1, y1, x2, y2 } = layout.box;
    const width = x2 - x1 + 2 * PAD;
    svg.setAttribute("viewBox", `${x1 - PAD} ${y1 - PAD} ${width} ${y2 - y1 + 2 * PAD}`);
    // Shrunk to the panel's width, but never below MIN_SCALE: a wider drawing scrolls.
    svg.style.width = `${Math.max(svg.parentElement.clientWidth, Math.round(width * MIN_SCALE))}px`;
    const defs = svgEl("defs", {}, svg);
    const marker = svgEl("marker", { id: "preview-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6.5, markerHeight: 6.5, orient: "auto-start-reverse", markerUnits: "strokeWidth" }, defs);
    svgEl("path", { d: "M0 0 L10 5 L0 10 z", class: "arrowhead" }, marker);
    for (const e of layout.edges) {
      svgEl("path", { d: layout.routes.get(e.id), class: `edge edge-${e.kind}`, "data-edge": e.id, "marker-end": "url(#preview-arrow)" }, svg);
    }
    for (const e of layout.edges) {
      const spot = layout.labels.get(e.id);
      if (!e.label || !spot) continue;
      const g = svgEl("g", { class: `edge-label edge-label-${e.kind}` }, svg);
      svgEl("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h, rx: 4 }, g);
      svgEl("text", { x: spot.x + spot.w / 2, y: spot.y + spot.h / 2 + 3.6, "text-anchor": "middle" }, g).textContent = edgeLabel(e);
    }
    for (const n of layout.nodes.values()) {
      const g = svgEl("g", { class: `node node-${n.kind}`, "data-node": n.id, transform: `translate(${n.x} ${n.y})` }, svg);
      svgEl("title", {}, g).textContent = `${nodeName(n.data)} — ${nodeDetail(n.data)}`;
      const r = n.kind === "consumer" ? Math.min(18, n.h / 2) : n.kind === "exchange" ? 2 : 8;
      svgEl("rect", { width: n.w, height: n.h, rx: r, class: "node-box" }, g);
      svgEl("rect", { width: 5, height: n.h, rx: 2, class: "node-accent" }, g);
      svgEl("text", { x: 14, y: 22, class: "node-label" }, g).textContent = fitText(nodeName(n.data), LABEL_FONT, n.w - 20, textWidth);
      svgEl("text", { x: 14, y: 38, class: "node-detail" }, g).textContent = fitText(nodeDetail(n.data), `11px ${FONT}`, n.w - 20, textWidth);
    }
  }

  // ---------------------------------------------------------------- the steps
  const languages = [...preview.querySelectorAll("[data-language]")];
  for (const button of languages) {
    button.addEventListener("click", () => {
      state.language = button.dataset.language;
      showSteps();
    });
  }

  function showSteps() {
    for (const b of languages) b.setAttribute("aria-pressed", String(b.dataset.language === state.language));
    const answer = state.last;
    if (!answer) return;
    const steps = answer.steps[state.language] || answer.steps.en || [];
    titleEl.textContent = answer.title[state.language] || answer.title.en || "";
    stepsEl.replaceChildren(
      ...steps.map((step) => {
        const item = el("li", { class: "preview-step", "data-step": step.id }, el("h4", {}, step.title));
        const body = el("div", { class: "preview-prose" });
        body.innerHTML = step.instructions_html; // Markdown rendered and sanitised by the server (nh3)
        item.append(body);
        for (const hint of step.hints) {
          const details = el("details", { class: "preview-hint" }, el("summary", {}, gettext("Hint")));
          const text = el("div", { class: "preview-prose" });
          text.innerHTML = hint;
          details.append(text);
          item.append(details);
        }
        if (step.checkpoints.length) {
          const list = el("ul", { class: "preview-checkpoints" });
          for (const cp of step.checkpoints) {
            const li = el("li");
            li.innerHTML = cp;
            list.append(li);
          }
          item.append(list);
        }
        return item;
      }),
    );
  }

  // ---------------------------------------------------------------- asking the server
  let drawn = Promise.resolve();
  function setStatus(name, text) {
    preview.dataset.state = name;
    statusEl.textContent = text;
  }

  async function refresh() {
    const request = ++state.request;
    setStatus("checking", gettext("Checking…"));
    let response, answer;
    try {
      response = await fetch(url, {
        method: "POST",
        body: editor.getValue(),
        headers: { "Content-Type": "text/plain; charset=utf-8", "X-CSRFToken": csrf },
        credentials: "same-origin",
      });
      answer = await response.json();
    } catch {
      if (request === state.request) setStatus("failed", gettext("The preview could not be loaded."));
      return;
    }
    if (request !== state.request) return; // a newer text was sent meanwhile
    const problems = answer.problems || [];
    markProblems(problems);
    showProblems(problems);
    if (problems.length) {
      // The last good diagram and steps stay, marked out of date.
      const text = ngettext("%s problem: the preview shows the last valid text.", "%s problems: the preview shows the last valid text.", problems.length);
      setStatus("invalid", interpolate(text, [problems.length]));
      return;
    }
    state.last = answer;
    showSteps();
    drawn = layoutGraph(elk, answer.graph, DENSITY.normal, measure).then((layout) => {
      if (request === state.request) draw(layout);
    });
    await drawn;
    if (request === state.request) setStatus("valid", gettext("Valid"));
  }

  let timer = null;
  editor.on("changes", () => {
    clearTimeout(timer);
    timer = setTimeout(refresh, DELAY_MS);
  });
  refresh();
}
