// RabbitMQ Lab Console: a class's live dashboard (docs/classes.md).
//
// The page draws the class's summary (exercises/classes.py classroom_dashboard): at once
// from #dashboard-summary, then from each message of its WebSocket, which sends the whole
// summary again whenever it changed. A dropped socket is reopened with backoff; the page
// says "Reconnecting…" meanwhile and keeps the last summary on screen.

const BACKOFF_MS = [500, 1000, 2000, 4000, 5000];
const FINAL = { 4403: gettext("Not your class"), 4404: gettext("Class not found") };
const T = {
  connecting: gettext("Connecting…"), live: gettext("Live"), reconnecting: gettext("Reconnecting…"),
  learner: gettext("Learner"), now: gettext("Now"), actions: gettext("Lab"), passed: gettext("Passed"),
  view: gettext("View"), reset: gettext("Reset"), end: gettext("End"),
  stepPassed: gettext("passed"), stepCurrent: gettext("current step"), stepTodo: gettext("not reached"),
  notStarted: gettext("no lab yet"), ended: gettext("lab ended"),
  idle: (time) => interpolate(gettext("not moving since %s"), [time]),
  learners: (n) => interpolate(ngettext("%s learner", "%s learners", n), [n]),
  states: { upcoming: gettext("not started"), running: gettext("running"), ended: gettext("ended") },
  confirmReset: (name) => interpolate(gettext("Reset %s's lab? It starts over from the first step."), [name]),
  confirmEnd: (name) => interpolate(gettext("End %s's lab? Its vhost and user are deleted."), [name]),
  failed: gettext("That did not work"),
};
const LANG = document.documentElement.lang || "en";

const grid = document.getElementById("dashboard-grid");
const connEl = document.getElementById("dash-connection");
const noticeEl = document.getElementById("dash-notice");
let summary = JSON.parse(document.getElementById("dashboard-summary").textContent);
const wsPath = JSON.parse(document.getElementById("dashboard-ws").textContent);

// An element with its attributes (camelCase names become dashed: dataStep, data-step)
// and children; text is always set as text.
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false || v === "") continue;
    el.setAttribute(k === "class" ? "class" : k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), v);
  }
  for (const child of children.flat()) if (child !== null && child !== undefined && child !== false) el.append(child);
  return el;
}

const timeOf = (iso) => new Date(iso).toLocaleTimeString(LANG, { hour: "2-digit", minute: "2-digit" });
const CELL_TEXT = { passed: "✓", current: "●", todo: "" };

function learnerStatus(learner) {
  const parts = [];
  if (learner.current) {
    const ex = summary.exercises.find((e) => e.slug === learner.current.exercise);
    const index = ex ? ex.steps.findIndex((s) => s.id === learner.current.step) + 1 : 0;
    parts.push(h("span", { class: "dash-current" }, `${index ? `${index}. ` : ""}${learner.current.title}`));
  } else {
    parts.push(h("span", { class: "muted" }, T.notStarted));
  }
  if (learner.idle_since) parts.push(h("span", { class: "dash-badge dash-idle", dataIdle: "true" }, T.idle(timeOf(learner.idle_since))));
  for (const reason of learner.failing) parts.push(h("span", { class: "dash-badge dash-failing", dataFailing: "true" }, reason));
  return parts;
}

function labActions(learner) {
  const buttons = [];
  const many = summary.exercises.length > 1;
  for (const ex of summary.exercises) {
    const lab = learner.labs[ex.slug];
    if (!lab) continue;
    const group = h("span", { class: "dash-actions", dataLab: lab.id });
    if (many) group.append(h("span", { class: "muted dash-actions-ex" }, ex.title));
    group.append(h("a", { class: "btn btn-sm btn-quiet", href: lab.view_url, target: "_blank", rel: "noopener", dataAction: "view" }, T.view));
    if (lab.reset_url) group.append(h("button", { type: "button", class: "btn btn-sm btn-secondary", dataAction: "reset", dataUrl: lab.reset_url, dataName: learner.name }, T.reset));
    if (lab.end_url) group.append(h("button", { type: "button", class: "btn btn-sm btn-danger", dataAction: "end", dataUrl: lab.end_url, dataName: learner.name }, T.end));
    else group.append(h("span", { class: "muted" }, T.ended));
    buttons.push(group);
  }
  return buttons;
}

function render() {
  const s = summary;
  const state = document.getElementById("dash-state");
  state.className = `class-state class-state-${s.class.state}`;
  state.dataset.state = s.class.state;
  state.textContent = T.states[s.class.state] || s.class.state;
  document.getElementById("dash-learners").textContent = T.learners(s.learners.length);
  document.getElementById("dash-empty").hidden = s.learners.length > 0;

  // The lab's actions come right after the learner's state: a wide grid of steps scrolls
  // sideways, and Reset or End must not scroll out of view with it.
  const exRow = h("tr", {}, h("th", { rowspan: 2, scope: "col" }, T.learner), h("th", { rowspan: 2, scope: "col" }, T.now),
    h("th", { rowspan: 2, scope: "col" }, T.actions));
  const stepRow = h("tr");
  for (const ex of s.exercises) {
    exRow.append(h("th", { colspan: ex.steps.length || 1, scope: "colgroup", class: "dash-ex", dataExercise: ex.slug }, ex.title));
    ex.steps.forEach((step, i) => stepRow.append(h("th", { scope: "col", title: step.title, class: "dash-step", dataStep: step.id }, String(i + 1))));
  }

  const body = h("tbody");
  for (const learner of s.learners) {
    const row = h("tr", { dataLearner: learner.name, class: learner.failing.length ? "is-failing" : learner.idle_since ? "is-idle" : "" },
      h("th", { scope: "row", class: "dash-name" }, learner.name),
      h("td", { class: "dash-status" }, learnerStatus(learner)),
      h("td", { class: "dash-lab" }, labActions(learner)));
    for (const ex of s.exercises) {
      const lab = learner.labs[ex.slug];
      for (const step of ex.steps) {
        const cell = lab ? lab.cells[step.id] || "todo" : "todo";
        const label = { passed: T.stepPassed, current: T.stepCurrent, todo: T.stepTodo }[cell];
        row.append(h("td", { class: `dash-cell dash-cell-${cell}`, dataExercise: ex.slug, dataStep: step.id, dataState: cell, title: `${step.title}: ${label}` }, CELL_TEXT[cell]));
      }
    }
    body.append(row);
  }
  const foot = h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, T.passed), h("td"), h("td")));
  for (const ex of s.exercises) {
    for (const step of ex.steps) foot.firstChild.append(h("td", { class: "dash-count", dataExercise: ex.slug, dataStep: step.id, title: step.title }, String(s.counts[ex.slug]?.[step.id] ?? 0)));
  }
  grid.replaceChildren(h("thead", {}, exRow, stepRow), body, foot);
}

function notice(text) {
  noticeEl.textContent = text;
  noticeEl.hidden = !text;
}

// Reset and End go to the class's endpoints (the instructor acts on the learner's lab
// through the class); the next summary shows what became of it.
const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["x-csrftoken"];
grid.addEventListener("click", async (ev) => {
  const button = ev.target.closest("button[data-action]");
  if (!button) return;
  const name = button.dataset.name;
  const question = button.dataset.action === "end" ? T.confirmEnd(name) : T.confirmReset(name);
  if (!window.confirm(question)) return;
  button.disabled = true;
  try {
    const response = await fetch(button.dataset.url, { method: "POST", headers: { "X-CSRFToken": csrf }, credentials: "same-origin" });
    notice(response.ok ? "" : `${T.failed}: ${(await response.text()) || response.status}`);
  } catch (error) {
    notice(`${T.failed}: ${error}`);
  } finally {
    button.disabled = false;
  }
});

function setConnection(state, text) {
  connEl.dataset.state = state;
  connEl.querySelector(".conn-text").textContent = text || T[state];
}

let attempt = 0;
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}${wsPath}`);
  let final = null;
  ws.addEventListener("open", () => { attempt = 0; setConnection("live"); });
  ws.addEventListener("message", (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "dashboard") {
      summary = m;
      render();
    } else if (m.type === "error") {
      final = m.message;
    }
  });
  ws.addEventListener("close", (ev) => {
    if (FINAL[ev.code]) {
      setConnection("disconnected", final || FINAL[ev.code]);
      return;
    }
    setConnection("reconnecting");
    setTimeout(connect, BACKOFF_MS[Math.min(attempt++, BACKOFF_MS.length - 1)]);
  });
}

render();
connect();
window.classDashboard = { get summary() { return summary; } };
