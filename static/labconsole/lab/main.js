// RabbitMQ Lab Console: the live lab page.
//
// One WebSocket (docs/live-protocol.md) feeds everything on this page: the topology
// diagram with its moving message dots, the queue and exchange badges, the workload
// counters, the checkpoints, the event log and the message inspector. Plain ES2020 and
// SVG: no framework, no build step. This module is the page; format.js, layout.js and
// paths.js beside it are its pure parts; ELK (elk.bundled.js, a classic script loaded before
// this module) lays the diagram out. docs/front-end.md explains the layout algorithm
// and how to add a node kind.
import { fitText as fitTextWith, fmtTime, nameOf, numberFormats } from "./format.js";
import { DENSITY, PAD, layoutGraph } from "./layout.js";
import { centreOf, pointAt } from "./paths.js";

const configEl = document.getElementById("lab-config");
const labEl = document.getElementById("lab");
if (configEl && labEl) main(configEl, labEl);

function main(configEl, labEl) {
  const config = JSON.parse(configEl.textContent);

  // ------------------------------------------------------------------ words
  // gettext, ngettext and interpolate are Django's JavaScript catalogue (/jsi18n/, loaded
  // before this file), in the page's language: `makemessages -d djangojs` collects these
  // calls into locale/<language>/LC_MESSAGES/djangojs.po.
  const LANG = document.documentElement.lang || "en";
  const T = {
    conn: { connecting: gettext("Connecting…"), live: gettext("Live"), reconnecting: gettext("Reconnecting…"), disconnected: gettext("Disconnected") },
    connRefused: { 4403: gettext("Not your lab"), 4404: gettext("Lab not found") },
    brokerUnavailable: gettext("Broker unavailable — reconnecting…"),
    brokerBack: gettext("Live: broker back"),
    monitorSilent: gettext("Lab monitor not answering — restarting it…"),
    running: gettext("running"), stopped: gettext("stopped"),
    ready: gettext("ready"), unacked: gettext("unacked"), in: gettext("in"), out: gettext("out"),
    perSec: gettext("/s"), msgPerSec: gettext("msg/s"),
    latency: (p50, p99) => interpolate(gettext("p50 %(p50)s · p99 %(p99)s ms"), { p50: fmtMs(p50), p99: fmtMs(p99) }, true),
    noLatency: gettext("p50 – · p99 – ms"),
    latencyTitle: gettext("Time from publish to delivery of the consumers' deliveries of the last 10 s: half took less than p50, 99 in 100 less than p99"),
    // The counts on a workload's box are short, as "ready" and "unacked" on a queue's are.
    sent: gettext("sent"), acked: pgettext("count on a consumer's box", "acked"), unroutable: gettext("unroutable"),
    returned: (n) => interpolate(gettext("returned: %s"), [fmtInt(n)]),
    failed: (nacked, rejected) => interpolate(gettext("nack: %(nacked)s · reject: %(rejected)s"), { nacked: fmtInt(nacked), rejected: fmtInt(rejected) }, true),
    defaultExchange: gettext("(default)"),
    queueGone: gettext("deleted by the broker"),
    noKey: gettext("(no key)"),
    you: gettext("you"), publishForm: gettext("publish form"),
    producerDetail: (rate) => interpolate(gettext("%s msg/s"), [fmtRate(rate)]),
    consumerDetail: (prefetch, ack) => interpolate(gettext("prefetch %(prefetch)s, %(ack)s ack"), { prefetch, ack: ACK_MODES[ack] || ack }, true),
    dropped: (n) => interpolate(ngettext("%s frame dropped", "%s frames dropped", n), [fmtInt(n)]),
    sampled: (n) => interpolate(gettext("log: 1 in %s shown"), [fmtInt(n)]),
    animPause: gettext("Pause animation"), animResume: gettext("Resume animation"),
    pause: gettext("Pause"), resume: gettext("Resume"), resumeN: (n) => interpolate(gettext("Resume (%s new)"), [fmtInt(n)]),
    producers: gettext("Producers"), consumers: gettext("Consumers"), consumersOnQueue: gettext("consumers"),
    workload: gettext("workload"), exchange: gettext("exchange"), routingKey: gettext("routing key"), queue: gettext("queue"),
    routedQueues: gettext("routed to"), redelivered: gettext("redelivered"), yes: gettext("yes"),
    reply: gettext("reply"), reason: gettext("reason"),
    body: gettext("Body"), properties: gettext("Properties"), headers: gettext("Headers"), xDeath: "x-death",
    journey: gettext("This message in the log"), truncated: gettext("cut at 2 KiB"), emptyBody: gettext("(empty)"),
    notInLog: gettext("This message is not in the log (any more)."),
    xDeathCols: [gettext("count"), gettext("reason"), gettext("queue"), gettext("exchange"), gettext("routing keys"), gettext("time")],
    stepComplete: (title) => interpolate(gettext("Step complete: %s"), [title]),
    allComplete: gettext("All steps complete. Well done!"),
    progress: (done, total) => interpolate(ngettext("%(done)s / %(total)s check", "%(done)s / %(total)s checks", total), { done, total }, true),
    passed: gettext("passed"), pending: gettext("pending"),
    refused: gettext("The server refused a message"),
    endedTitle: gettext("This lab has ended."), failedTitle: gettext("This lab failed."),
    endedKept: gettext("Its vhost and user are gone; the counters are the last it reported."),
    endedNotKept: gettext("Its vhost and user are gone, and no counters were kept from it."),
    logNotKept: gettext("Events are shown only while the lab runs; none were kept."),
    alert: {
      ok: gettext("OK"), no_queue: gettext("no queue"),
      pending: (s) => interpolate(gettext("breached %s s"), [s]),
      firing: (s) => interpolate(gettext("FIRING %s s"), [s]),
    },
    alertFired: gettext("fired"), alertCleared: gettext("cleared"),
    presets: { spike: gettext("spike"), stress: gettext("stress") },
    instructor: gettext("your instructor"),
    // The lab's brokers (kind "broker"): what the learner did to a node, and what followed.
    brokerActions: { stop: gettext("stopped it"), kill: gettext("killed it"), start: gettext("started it") },
    tracingRestored: gettext("the broker had stopped tracing this lab: it traces again; what was sent meanwhile is not drawn"),
    nodeStates: { running: gettext("running"), stopped: gettext("stopped (the VM runs)"), down: gettext("down") },
    newLeader: (leader, was) => interpolate(gettext("leader %(was)s → %(leader)s"), { leader: leader || "–", was: was || "–" }, true),
    membersOnline: (online, size) => interpolate(gettext("%(online)s of %(size)s online"), { online, size }, true),
    classicDown: (node) => interpolate(gettext("down with %s"), [node]),
    classicBack: (node) => interpolate(gettext("back on %s"), [node]),
    // The brokers' timeline: where the messages stood at an event, and the log around it.
    timelineFlow: (f) => interpolate(gettext("%(published)s sent · %(delivered)s received"), { published: fmtInt(f.published), delivered: fmtInt(f.delivered) }, true),
    timelineMissing: (n) => interpolate(gettext("%s missing"), [fmtInt(n)]),
    timelineShowLog: gettext("Show the log around this moment"),
    logMoment: (time, seconds) => interpolate(gettext("%(time)s ± %(seconds)s s"), { time, seconds }, true),
    logMomentGone: gettext("The log holds no events of that moment any more: it keeps only the newest."),
    loadRunning: (preset, rate, s) => interpolate(gettext("%(preset)s: %(rate)s msg/s, %(seconds)s s left"), { preset, rate, seconds: s }, true),
    loadSent: (preset, n, s) => interpolate(gettext("%(preset)s: %(n)s sent in %(seconds)s s"), { preset, n, seconds: s }, true),
    loadPeak: gettext("most held"), loadRefused: gettext("refused"), loadReturned: gettext("returned"), ms: gettext("ms"),
    alertMetrics: { messages: gettext("ready"), unacked: gettext("unacked"), consumers: gettext("consumers"), p99_ms: gettext("p99, ms") },
  };
  // What the page calls the protocol's kinds; the protocol's own names stay in data
  // attributes, CSS classes and the log filter's values.
  const EVENT_KINDS = {
    published: gettext("published"), confirmed: gettext("confirmed"), returned: gettext("returned"),
    routed: gettext("routed"), unroutable: gettext("unroutable"), delivered: gettext("delivered"),
    acked: gettext("acked"), nacked: gettext("nacked"), rejected: gettext("rejected"),
    "dead-lettered": gettext("dead-lettered"), expired: gettext("expired"), parked: gettext("parked"),
    error: gettext("error"), alert: gettext("alert"), load: gettext("load"), broker: gettext("broker"),
    // What a workload reports of itself.
    started: gettext("started"), stopped: gettext("stopped"), updated: gettext("updated"),
    reconnected: gettext("reconnected"), crashed: gettext("crashed"),
    // A publish the broker refused (a nack to a producer with confirms), and an RPC
    // request nobody answered in time.
    nacked_by_broker: gettext("refused"), unanswered: gettext("unanswered"),
  };
  const NODE_KINDS = { producer: gettext("producer"), exchange: gettext("exchange"), queue: gettext("queue"), consumer: gettext("consumer") };
  const EDGE_KINDS = {
    binding: gettext("binding"), "dead-letter": gettext("dead-letter"), alternate: gettext("alternate"),
    publish: gettext("publish"), consume: gettext("consume"),
  };
  const ACK_MODES = { manual: gettext("manual"), auto: gettext("auto") };
  const kindName = (kind) => EVENT_KINDS[kind] || kind || "?";
  // "@you" is the learner's own publishes from the page (the graph's p:@you).
  // "@instructor": the class's instructor, on the class's brokers (a node fault's event).
  const workloadName = (name) => (name === "@you" ? T.you : name === "@instructor" ? T.instructor : name || "");
  const YOU = "p:@you";

  // ------------------------------------------------------------------ constants
  const MAX_EVENTS = 500; // rows kept in memory and in the DOM
  const MAX_DOTS = 150; // dots in flight; extra samples are dropped
  const HOP_MS = 350; // one edge of a trace
  const PING_MS = 20000;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 5000];
  // The backoff starts over only once a socket delivered its snapshot and stayed open this
  // long: a server that accepts and then closes at once is not hammered by every tab.
  const STABLE_MS = 5000;
  const BROKER_BACK_MS = 4000; // how long the badge says the broker is back
  const KNOWN_KINDS = [
    "published", "confirmed", "returned", "routed", "unroutable", "delivered",
    "acked", "nacked", "rejected", "dead-lettered", "expired", "parked", "error",
  ];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const ACK_EVERY = 10; // acknowledge at least every 10 messages...
  const ACK_AFTER_MS = 250; // ...or this long after the first unacknowledged one
  const isOver = (labState) => labState === "ended" || labState === "failed";

  // ------------------------------------------------------------------ state
  // Everything the server told us, as last told. End-to-end tests read this.
  const state = {
    connected: false,
    connection: "connecting", // connecting | live | reconnecting | disconnected
    broker: "ok", // ok | unavailable: the server's own connection to RabbitMQ, as it says
    labState: labEl.dataset.labState || "running",
    counters: {}, // workload -> {published, confirmed, ...}
    queues: {}, // queue -> {ready, unacked, consumers, rate_in, rate_out}
    exchanges: {}, // exchange -> {rate_in, unroutable}
    checks: {}, // checkpoint id -> bool
    workloads: {}, // name -> {kind, running, settings}
    events: [], // newest last, at most MAX_EVENTS
    framesReceived: 0,
    snapshotsReceived: 0,
    dropped: 0,
    dotsInFlight: 0,
    animation: { paused: false, speed: 1 }, // the dots only: counters and the log go on
  };
  let graph = config.graph || { nodes: [], edges: [] };
  // While a second of a sandbox's history is shown (replay.js), frames still update
  // `state` but draw nothing: "Back to live" draws what they brought.
  let replaying = null;
  let layout = null; // see layoutGraph()

  window.labConsole = {
    state,
    get graph() { return graph; },
    get layout() { return layout; },
    get drawn() { return drawn; }, // a Promise: the graph drawn once ELK laid it out
    reconnect: () => { attempt = 0; connectNow(); },
    // A sandbox's replay (replay.js): draws one second of its history instead of live.
    replay: { show: showReplay, live: backToLive, get replaying() { return replaying !== null; }, get second() { return replaying; } },
  };

  // ------------------------------------------------------------------ helpers
  const $ = (id) => document.getElementById(id);
  const { fmtInt, fmtRate, fmtMs } = numberFormats(LANG);
  const toast = (message, kind) => window.consoleToast && window.consoleToast(message, kind);

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "dataset") Object.assign(el.dataset, v);
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
    return el;
  }

  function s(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, v);
    if (parent) parent.append(el);
    return el;
  }

  // Text width for truncating labels inside nodes (SVG text does not ellipsize).
  const measureCtx = document.createElement("canvas").getContext("2d");
  const rootStyle = getComputedStyle(document.documentElement);
  const FONT = rootStyle.getPropertyValue("--font").trim() || "sans-serif";
  const MONO = rootStyle.getPropertyValue("--mono").trim() || "monospace";
  function textWidth(text, font) {
    measureCtx.font = font;
    return measureCtx.measureText(text).width;
  }
  const fitText = (text, font, maxWidth) => fitTextWith(text, font, maxWidth, textWidth);

  // ================================================================== layout
  // layout.js places the nodes; the page measures their texts in its language.
  // Room a node needs besides its name: the icon on the left and a margin on the right.
  const LABEL_INSET = { producer: 44, exchange: 56, queue: 66, consumer: 50 };
  // Sizes in the drawing's units, which a laptop's lab page shows at about 1:1 (the
  // drawing is scaled to its box): names at 14 px, the numbers at 13 px (14 px in the
  // presenter view, as console.css says, for 18 px on a projector).
  const LABEL_FONT = () => `650 14px ${FONT}`;
  const STAT_FONT = () => `${presenting() ? 14 : 13}px ${FONT}`;
  // Room for a node's numbers in the page's language, with four-digit counts.
  const STAT_INSET = { producer: 45, exchange: 56, queue: 20, consumer: 51 };
  const statSample = (kind) =>
    kind === "queue" ? `${T.ready} 0000 · ${T.unacked} 0000`
      : kind === "producer" ? `00.0${T.perSec} · ${T.sent} 00000`
      : kind === "consumer" ? `00.0${T.perSec} · ${T.acked} 00000`
      : `00.0 ${T.msgPerSec}`;
  const nodeName = (n) => (n.kind === "exchange" && !nameOf(n.id) ? T.defaultExchange : n.label || nameOf(n.id));
  const measure = {
    nodeWidth: (n, kind) => Math.max(
      textWidth(nodeName(n), LABEL_FONT()) + LABEL_INSET[kind],
      textWidth(statSample(kind), STAT_FONT()) + STAT_INSET[kind],
    ),
    edgeLabelWidth: (label) => edgeLabelWidth(label),
  };

  // ================================================================== drawing
  const svg = $("topology");
  const diagramEl = $("diagram");
  let layers = {};
  const nodeViews = new Map(); // node id -> {g, kind, texts...}
  const edgeViews = new Map(); // edge id -> {path, samples, data}
  const edgeIndex = new Map(); // "source>target" -> [edge id]
  let graphKey = "";
  let serverGraph = null; // the graph as the server sent it, before the learner's edges

  // The box the diagram has, and the scale a layout would get in it.
  const boxSize = () => [Math.floor(diagramEl.clientWidth), Math.floor(diagramEl.clientHeight)];
  const fitScale = (L, [cw, ch]) => Math.min(cw / (L.box.x2 - L.box.x1 + 2 * PAD), ch / (L.box.y2 - L.box.y1 + 2 * PAD));

  // ELK lays out asynchronously; each density's layout of the graph drawn last is kept, so
  // a resize that asks again costs nothing.
  const elk = new window.ELK();
  let layoutCache = { graph: null, layouts: {} };
  function layoutIn(g, density) {
    if (layoutCache.graph !== g) layoutCache = { graph: g, layouts: {} };
    const key = `${density.name}${presenting() ? " presenting" : ""}`; // its labels are larger
    layoutCache.layouts[key] ??= layoutGraph(elk, g, density, measure);
    return layoutCache.layouts[key];
  }
  // The normal layout (with its detail rows) when it fits unshrunk; otherwise whichever
  // of the two shows its text larger: a shrunk drawing's 13 px numbers fall below 13 px.
  async function chooseLayout(g) {
    const size = boxSize();
    const normal = await layoutIn(g, DENSITY.normal);
    const scale = fitScale(normal, size);
    if (!size[0] || !size[1] || scale >= 1) return normal;
    const compact = await layoutIn(g, DENSITY.compact);
    return fitScale(compact, size) > scale ? compact : normal;
  }

  // A workload's node says its rate, or its prefetch and ack, as the learner last set them
  // on its card (the graph carries the exercise's own).
  function workloadDetail(n) {
    const settings = state.workloads[nameOf(n.id)]?.settings || {};
    if (n.kind === "producer" && n.rate != null) return T.producerDetail(settings.rate ?? n.rate);
    if (n.kind === "consumer" && n.prefetch != null) {
      return T.consumerDetail(settings.prefetch ?? n.prefetch, settings.ack ?? n.ack);
    }
    return null;
  }

  // A producer's publish edge is labelled with the keys it publishes with now, as its card
  // last applied them (null: the graph's own label stands).
  function publishKeys(name) {
    const settings = state.workloads[name]?.settings;
    if (!settings || state.workloads[name].kind !== "producer") return null;
    if (Array.isArray(settings.routing_keys) && settings.routing_keys.length) return settings.routing_keys.join(", ");
    return settings.routing_key ?? null;
  }

  // The graph's texts for people, in the page's language: the server sends the same graph
  // to every viewer, with numbers (a producer's rate, a consumer's prefetch and ack) and
  // English placeholders where there is no name. Idempotent: a graph shown once is
  // shown again after a resize.
  function localizeGraph(g) {
    const nodes = g.nodes.map((n) => {
      if (n.id === "p:@you") return { ...n, label: T.you, detail: T.publishForm };
      const detail = workloadDetail(n);
      return detail ? { ...n, detail } : n;
    });
    const edges = g.edges.map((e) => {
      if (e.kind === "publish") {
        const keys = publishKeys(nameOf(e.source));
        if (keys != null) return { ...e, label: keys };
      }
      if (e.kind === "alternate") return { ...e, label: T.unroutable };
      if (e.kind === "binding" && e.label === "(no key)") return { ...e, label: T.noKey };
      return e;
    });
    return { ...g, nodes, edges };
  }

  // The learner's publishes from the page go wherever the form says: the topology has no
  // edge for them, so one is drawn to each exchange the monitor saw them reach (its
  // exchanges' `from_you`), and their dots travel along it.
  function withYourEdges(g) {
    const nodes = new Set(g.nodes.map((n) => n.id));
    const have = new Set(g.edges.filter((e) => e.source === YOU).map((e) => e.target));
    const extra = Object.entries(state.exchanges)
      .filter(([name, x]) => +x?.from_you > 0 && nodes.has(`x:${name}`) && !have.has(`x:${name}`))
      .map(([name]) => ({ id: `publish:${YOU}>x:${name}:`, source: YOU, target: `x:${name}`, kind: "publish", label: "" }));
    return extra.length ? { ...g, edges: [...g.edges, ...extra] } : g;
  }

  // Draws the graph once ELK has laid it out (a Promise, which `window.labConsole.drawn`
  // also holds). A layout that resolves after a newer graph arrived is dropped.
  let layoutRequest = 0;
  let drawn = Promise.resolve();
  function renderGraph(g, force = false) {
    serverGraph = g;
    g = withYourEdges(g);
    const key = JSON.stringify(g);
    if (key === graphKey && !force) return drawn;
    graphKey = key;
    const next = localizeGraph(g);
    const request = ++layoutRequest;
    drawn = chooseLayout(next).then(
      (L) => {
        if (request !== layoutRequest) return;
        graph = next;
        layout = L;
        drawGraph();
      },
      (error) => {
        if (request === layoutRequest) console.error("diagram layout failed", error);
      },
    );
    return drawn;
  }

  function drawGraph() {
    nodeViews.clear();
    edgeViews.clear();
    edgeIndex.clear();
    clearDots();
    svg.replaceChildren();
    svg.dataset.density = layout.density.name;

    const defs = s("defs", {}, svg);
    for (const kind of ["default", "dead-letter", "alternate"]) {
      const m = s("marker", { id: `arrow-${kind}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6.5, markerHeight: 6.5, orient: "auto-start-reverse", markerUnits: "strokeWidth" }, defs);
      s("path", { d: "M0 0 L10 5 L0 10 z", class: `arrowhead arrowhead-${kind}` }, m);
    }
    const root = s("g", { class: "viewport" }, svg);
    layers = {
      edges: s("g", { class: "edges" }, root),
      labels: s("g", { class: "edge-labels" }, root),
      nodes: s("g", { class: "nodes" }, root),
      fx: s("g", { class: "fx" }, root),
      dots: s("g", { class: "dots" }, root),
    };

    for (const e of layout.edges) {
      const kind = e.kind || "binding";
      const marker = kind === "dead-letter" || kind === "alternate" ? kind : "default";
      const path = s("path", { d: layout.routes.get(e.id), class: `edge edge-${kind}`, "data-edge": e.id, "marker-end": `url(#arrow-${marker})` }, layers.edges);
      const title = s("title", {}, path);
      title.textContent = `${EDGE_KINDS[kind] || kind}: ${nameOf(e.source) || T.defaultExchange} → ${nameOf(e.target) || T.defaultExchange}${e.label ? ` (${e.label})` : ""}`;
      edgeViews.set(e.id, { data: e, path, samples: samplePath(path) });
      const k = `${e.source}>${e.target}`;
      if (!edgeIndex.has(k)) edgeIndex.set(k, []);
      edgeIndex.get(k).push(e.id);
    }
    for (const n of layout.nodes.values()) drawNode(n);
    drawEdgeLabels();
    populateLogFilters();
    renderStats();
    applyAllWorkloadsToDiagram();
    markSelectedNodes();
    fitView();
  }

  function samplePath(path) {
    const total = path.getTotalLength();
    const count = Math.max(8, Math.min(96, Math.round(total / 6)));
    const points = [];
    for (let i = 0; i <= count; i++) {
      const p = path.getPointAtLength((total * i) / count);
      points.push([p.x, p.y]);
    }
    return points;
  }

  // Routing keys at 10.5 px; in the presenter view at 13.5 px (console.css says the same),
  // which a projector's 1.4:1 or more shows at 18 px and more.
  const EDGE_LABEL_PX = () => (presenting() ? 13.5 : 10.5);
  const EDGE_LABEL_FONT = () => `${EDGE_LABEL_PX()}px ${MONO}`;
  const EDGE_LABEL_MAX = 130; // longer binding keys and header arguments are cut (full text in the tooltip)
  const edgeLabelWidth = (label) => textWidth(fitText(label, EDGE_LABEL_FONT(), EDGE_LABEL_MAX), EDGE_LABEL_FONT()) + 12;

  // ELK placed each label beside its edge, clear of the nodes and of the other labels.
  function drawEdgeLabels() {
    for (const { data: e } of edgeViews.values()) {
      const spot = layout.labels.get(e.id);
      if (!e.label || !spot) continue;
      const text = fitText(e.label, EDGE_LABEL_FONT(), EDGE_LABEL_MAX);
      const g = s("g", { class: `edge-label edge-label-${e.kind}`, "data-edge": e.id }, layers.labels);
      s("rect", { x: spot.x, y: spot.y, width: spot.w, height: spot.h, rx: 4 }, g);
      const t = s("text", { x: spot.x + spot.w / 2, y: spot.y + spot.h / 2 + 0.34 * EDGE_LABEL_PX(), "text-anchor": "middle" }, g);
      t.textContent = text;
      if (text !== e.label) s("title", {}, g).textContent = e.label;
    }
  }

  // Each kind has its own outline and glyph; see docs/front-end.md to add a kind.
  const SHAPES = {
    producer: (n) => roundedRect(n.w, n.h, 10),
    consumer: (n) => roundedRect(n.w, n.h, n.h / 2),
    exchange: (n) => {
      const k = 13, w = n.w, hh = n.h;
      return `M0 ${hh / 2} L${k} 0 H${w - k} L${w} ${hh / 2} L${w - k} ${hh} H${k} Z`;
    },
    queue: (n) => roundedRect(n.w, n.h, 5),
  };
  const GLYPHS = {
    producer: (g) => s("path", { d: "M-3.5 -5 L5 0 L-3.5 5 Z", class: "node-glyph" }, g),
    exchange: (g) => s("path", { d: "M-5 -4 H1 M-5 4 H1 M1 -4 L5 0 L1 4", class: "node-glyph", fill: "none", "stroke-width": 1.8, "stroke-linecap": "round", "stroke-linejoin": "round" }, g),
    queue: (g) => {
      for (const dx of [-4, 0, 4]) s("rect", { x: dx - 1.3, y: -5, width: 2.6, height: 10, rx: 1, class: "node-glyph", stroke: "none" }, g);
    },
    consumer: (g) => s("circle", { r: 3.6, class: "node-glyph", fill: "none", "stroke-width": 2 }, g),
  };
  const roundedRect = (w, hh, r) =>
    `M${r} 0 H${w - r} A${r} ${r} 0 0 1 ${w} ${r} V${hh - r} A${r} ${r} 0 0 1 ${w - r} ${hh} H${r} A${r} ${r} 0 0 1 0 ${hh - r} V${r} A${r} ${r} 0 0 1 ${r} 0 Z`;

  // Baselines of the text rows inside a node, per density (queues have a bar and two
  // stat rows; compact nodes drop the detail row, which stays in the tooltip).
  const ROWS = {
    normal: { node: { label: 22, detail: 37, stat: 53 }, queue: { label: 20, detail: 34, bar: 41, stat: 61, rates: 77, latency: 92 } },
    compact: { node: { label: 18, stat: 33 }, queue: { label: 18, bar: 26, stat: 43, rates: 55, latency: 68 } },
  };

  function drawNode(n) {
    const d = n.data;
    const rows = ROWS[layout.density.name][n.kind === "queue" ? "queue" : "node"];
    const name = nodeName(d);
    const g = s("g", { class: `node node-${n.kind}`, "data-node": n.id, transform: `translate(${n.x} ${n.y})`, tabindex: 0 }, layers.nodes);
    const title = s("title", {}, g);
    title.textContent = `${NODE_KINDS[n.kind] || n.kind} ${name}${d.detail ? ` — ${d.detail}` : ""}`;
    s("path", { d: SHAPES[n.kind](n), class: "node-box" }, g);
    const iconX = n.kind === "exchange" ? 25 : 19, iconY = n.kind === "queue" ? rows.label - 5 : n.h / 2;
    const icon = s("g", { transform: `translate(${iconX} ${iconY})` }, g);
    s("circle", { r: 9.5, class: "node-icon-bg" }, icon);
    GLYPHS[n.kind](icon);

    const textX = n.kind === "queue" ? iconX + 15 : iconX + 16;
    const maxText = n.w - textX - (n.kind === "exchange" || n.kind === "consumer" ? 14 : 8);
    const v = { g, kind: n.kind, node: n, title };
    const label = s("text", { x: textX, y: rows.label, class: "node-label" }, g);
    label.textContent = fitText(name, LABEL_FONT(), n.kind === "queue" ? n.w - textX - 30 : maxText);
    if (rows.detail) {
      const detail = s("text", { x: n.kind === "queue" ? 10 : textX, y: rows.detail, class: "node-detail" }, g);
      v.detailWidth = n.kind === "queue" ? n.w - 20 : maxText;
      detail.textContent = fitText(d.detail || NODE_KINDS[n.kind] || n.kind, `11px ${FONT}`, v.detailWidth);
      v.detail = detail;
    }
    if (n.kind === "queue") {
      const bw = n.w - 20;
      s("rect", { x: 10, y: rows.bar, width: bw, height: 5, rx: 2.5, class: "qbar-bg" }, g);
      v.barReady = s("rect", { x: 10, y: rows.bar, width: 0, height: 5, rx: 2.5, class: "qbar-ready" }, g);
      v.barUnacked = s("rect", { x: 10, y: rows.bar, width: 0, height: 5, rx: 2.5, class: "qbar-unacked" }, g);
      v.barWidth = bw;
      v.peak = 0;
      v.stat = s("text", { x: 10, y: rows.stat, class: "node-stat" }, g);
      v.rates = s("text", { x: 10, y: rows.rates, class: "node-stat node-rates" }, g);
      // Publish to delivery, of the consumers' recent deliveries (frames' `latency`).
      v.latency = s("text", { x: 10, y: rows.latency, class: "node-stat node-latency" }, g);
      s("title", {}, v.latency).textContent = T.latencyTitle;
      v.latencyText = s("tspan", {}, v.latency);
      v.latencyMax = n.w - 20;
      // Consumers on the queue, top right: a ring like the consumer icon, and a count.
      const cg = s("g", { class: "queue-consumers", transform: `translate(${n.w - 10} ${rows.label - 4})` }, g);
      v.consumersTitle = s("title", {}, cg);
      v.consumersIcon = s("circle", { cx: -3.5, cy: 0, r: 3.4, class: "queue-consumers-icon", visibility: "hidden" }, cg);
      v.consumers = s("text", { x: -10, y: 3.8, "text-anchor": "end", class: "node-stat" }, cg);
    } else {
      v.stat = s("text", { x: textX, y: rows.stat, class: "node-stat" }, g);
    }
    // A red count in the corner: unroutable (exchange), returned (producer), nacked +
    // rejected (consumer).
    v.badge = s("g", { class: "node-badge", visibility: "hidden", transform: `translate(${n.w - 8} 0)` }, g);
    const bh = BADGE_PX() + 8;
    v.badgeRect = s("rect", { x: -30, y: -bh / 2, width: 38, height: bh, rx: bh / 2, class: "node-badge-bad" }, v.badge);
    v.badgeText = s("text", { x: -11, y: 0.4 * BADGE_PX(), "text-anchor": "middle", class: "node-badge-text" }, v.badge);
    nodeViews.set(n.id, v);
  }

  // The badges' counts at 10 px; in the presenter view at 13.5 px, as console.css says.
  const BADGE_PX = () => (presenting() ? 13.5 : 10);
  function setBadge(v, count, title, tone = "bad") {
    if (!count) {
      v.badge.setAttribute("visibility", "hidden");
      return;
    }
    const text = `${tone === "warn" ? "↩" : "✕"} ${fmtInt(count)}`;
    const w = Math.max(3 * BADGE_PX(), textWidth(text, `700 ${BADGE_PX()}px ${FONT}`) + 14);
    v.badgeRect.setAttribute("x", 8 - w);
    v.badgeRect.setAttribute("width", w);
    v.badgeText.setAttribute("x", 8 - w / 2);
    v.badgeText.textContent = text;
    v.badgeRect.setAttribute("class", `node-badge-${tone}`);
    v.badge.setAttribute("visibility", "visible");
    let t = v.badge.querySelector("title") || s("title", {}, v.badge);
    t.textContent = title;
  }

  // ------------------------------------------------------------------ badges
  const rateHistory = []; // [{t, values: {workload: {published, handled}}}]

  function recordRates() {
    const now = performance.now();
    const values = {};
    for (const [name, c] of Object.entries(state.counters)) {
      values[name] = { published: +c.published || 0, handled: (+c.acked || 0) + (+c.nacked || 0) + (+c.rejected || 0) };
    }
    rateHistory.push({ t: now, values });
    while (rateHistory.length > 2 && now - rateHistory[1].t > 3000) rateHistory.shift();
  }

  function workloadRate(name, field) {
    if (rateHistory.length < 2) return 0;
    const a = rateHistory[0], b = rateHistory[rateHistory.length - 1];
    const dt = (b.t - a.t) / 1000;
    if (dt < 0.4 || !a.values[name] || !b.values[name]) return 0;
    return Math.max(0, (b.values[name][field] - a.values[name][field]) / dt);
  }

  function renderStats() {
    // A replayed second (replay.js) in place of live, whoever asks for a redraw.
    const { counters, queues, exchanges } = replaying || state;
    for (const v of nodeViews.values()) {
      const name = nameOf(v.node.id);
      if (v.kind === "queue") {
        const q = queues[name] || {};
        // A queue the broker deleted (x-expires, or deleted behind the page's back) stays
        // drawn, crossed out, until the topology drops it.
        const gone = q.missing === true;
        v.g.classList.toggle("is-gone", gone);
        if (gone) {
          setStatText(v.stat, [[T.queueGone, "strong"]]);
          v.rates.textContent = "";
          continue;
        }
        const ready = +q.ready || 0, unacked = +q.unacked || 0;
        v.peak = Math.max(v.peak * 0.999, ready + unacked);
        const scale = niceCeil(Math.max(10, v.peak));
        const wr = (v.barWidth * Math.min(ready, scale)) / scale;
        const wu = (v.barWidth * Math.min(unacked, scale - Math.min(ready, scale))) / scale;
        v.barReady.setAttribute("width", wr.toFixed(1));
        v.barUnacked.setAttribute("x", (10 + wr).toFixed(1));
        v.barUnacked.setAttribute("width", wu.toFixed(1));
        setStatText(v.stat, [[`${T.ready} `, ""], [fmtInt(ready), "strong"], [` · ${T.unacked} `, ""], [fmtInt(unacked), "strong"]]);
        v.rates.textContent = `${T.in} ${fmtRate(q.rate_in)}${T.perSec} · ${T.out} ${fmtRate(q.rate_out)}${T.perSec}`;
        const latency = q.latency ? T.latency(q.latency[0], q.latency[1]) : T.noLatency;
        if (v.latencyShown !== latency) {
          v.latencyShown = latency;
          v.latencyText.textContent = fitText(latency, STAT_FONT(), v.latencyMax);
        }
        const consumers = q.consumers == null ? "" : String(q.consumers);
        if (v.consumers.textContent !== consumers) {
          v.consumers.textContent = consumers;
          v.consumersTitle.textContent = `${T.consumersOnQueue}: ${consumers}`;
          v.consumersIcon.setAttribute("visibility", consumers ? "visible" : "hidden");
        }
      } else if (v.kind === "exchange") {
        const x = exchanges[name] || {};
        // Compact nodes have no detail row: the exchange type leads the stats instead.
        const compact = layout.density.name === "compact";
        const type = compact && v.node.data.detail ? `${v.node.data.detail} · ` : "";
        setStatText(v.stat, [[type, ""], [fmtRate(x.rate_in), "strong"], [compact ? T.perSec : ` ${T.msgPerSec}`, ""]]);
        setBadge(v, +x.unroutable || 0, `${fmtInt(x.unroutable)} ${T.unroutable}`);
      } else if (v.kind === "producer") {
        const c = counters[name] || {};
        setStatText(v.stat, [[fmtRate(workloadRate(name, "published")), "strong"], [`${T.perSec} · ${T.sent} ${fmtInt(c.published || 0)}`, ""]]);
        setBadge(v, +c.returned || 0, T.returned(c.returned), "warn");
      } else if (v.kind === "consumer") {
        const c = counters[name] || {};
        setStatText(v.stat, [[fmtRate(workloadRate(name, "handled")), "strong"], [`${T.perSec} · ${T.acked} ${fmtInt(c.acked || 0)}`, ""]]);
        const failed = (+c.nacked || 0) + (+c.rejected || 0);
        setBadge(v, failed, T.failed(c.nacked || 0, c.rejected || 0));
      }
    }
  }

  function setStatText(el, parts) {
    const key = parts.map((p) => p[0]).join("\u0000");
    if (el._key === key) return;
    el._key = key;
    el.replaceChildren(
      ...parts.map(([text, cls]) => {
        const t = document.createElementNS(SVG_NS, "tspan");
        if (cls) t.setAttribute("class", "node-stat-strong");
        t.textContent = text;
        return t;
      }),
    );
  }

  function niceCeil(v) {
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // ------------------------------------------------------------------ fit to the box
  // The viewBox scales the drawing to the box, between MIN_SCALE (below it, text is
  // unreadable: the drawing grows past the box and scrolls) and MAX_SCALE (a small
  // topology on a projector should not look like a poster).
  const MIN_SCALE = 0.74; // below this a tall drawing scrolls vertically...
  const MIN_SCALE_WIDTH = 0.6; // ...but a wide one shrinks this far first: sideways scrolling hides consumers
  const MAX_SCALE = 1.25;
  const MAX_SCALE_PRESENTING = 3; // a projector wants the drawing as large as it fits
  // The presenter view's zoom (times the fitted scale) and pan (in drawing units).
  const view = { zoom: 1, x: 0, y: 0 };
  const presenting = () => labEl.classList.contains("is-presenting");

  function fitView() {
    if (!layout) return;
    const [cw, ch] = boxSize();
    if (!cw || !ch) return;
    const { x1, y1, x2, y2 } = layout.box;
    const gw = x2 - x1 + 2 * PAD, gh = y2 - y1 + 2 * PAD;
    if (presenting()) {
      // Always fits the window at zoom 1; zoomed in, the rest is reached by dragging.
      const scale = Math.min(MAX_SCALE_PRESENTING, cw / gw, ch / gh) * view.zoom;
      const vw = cw / scale, vh = ch / scale;
      const cx = (x1 + x2) / 2 + view.x, cy = (y1 + y2) / 2 + view.y;
      svg.setAttribute("viewBox", `${cx - vw / 2} ${cy - vh / 2} ${vw} ${vh}`);
      svg.style.width = svg.style.height = "";
      state.diagramScale = +scale.toFixed(3);
      return;
    }
    const scale = Math.max(MIN_SCALE_WIDTH, Math.min(MAX_SCALE, cw / gw, Math.max(MIN_SCALE, ch / gh)));
    const sw = Math.max(cw, Math.ceil(gw * scale)), sh = Math.max(ch, Math.ceil(gh * scale));
    const vw = sw / scale, vh = sh / scale;
    svg.setAttribute("viewBox", `${x1 - PAD + (gw - vw) / 2} ${y1 - PAD + (gh - vh) / 2} ${vw} ${vh}`);
    svg.style.width = sw > cw ? `${sw}px` : "";
    svg.style.height = sh > ch ? `${sh}px` : "";
    state.diagramScale = +scale.toFixed(3);
  }

  // ------------------------------------------------------------------ presenter view
  // #presenter in the address (a bookmark, or the button) shows the diagram alone; the
  // socket, the counters and the log go on underneath. Wheel or buttons zoom, a drag
  // pans, Esc or the button goes back.
  const presenterToggle = $("presenter-toggle");
  function setPresenting(on) {
    labEl.classList.toggle("is-presenting", on);
    presenterToggle.setAttribute("aria-pressed", String(on));
    presenterToggle.textContent = presenterToggle.dataset[on ? "labelExit" : "labelEnter"];
    presenterToggle.setAttribute("href", on ? "#" : "#presenter");
    Object.assign(view, { zoom: 1, x: 0, y: 0 });
    state.presenting = on;
    fitView();
    if (serverGraph) renderGraph(serverGraph, true); // laid out again for its label size
  }
  const fromAddress = () => setPresenting(location.hash === "#presenter");
  window.addEventListener("hashchange", fromAddress);
  presenterToggle.addEventListener("click", (ev) => {
    ev.preventDefault();
    const on = !presenting();
    history.replaceState(null, "", on ? "#presenter" : location.pathname + location.search);
    setPresenting(on);
  });
  function zoomBy(factor, clientX, clientY) {
    const zoom = Math.max(0.5, Math.min(8, view.zoom * factor));
    const rect = diagramEl.getBoundingClientRect();
    // Keep the point under the pointer (or the centre) where it is.
    const scale = state.diagramScale;
    const dx = ((clientX ?? rect.left + rect.width / 2) - rect.left - rect.width / 2) / scale;
    const dy = ((clientY ?? rect.top + rect.height / 2) - rect.top - rect.height / 2) / scale;
    const k = 1 - view.zoom / zoom;
    view.x += dx * k;
    view.y += dy * k;
    view.zoom = zoom;
    fitView();
  }
  $("zoom-in").addEventListener("click", () => zoomBy(1.25));
  $("zoom-out").addEventListener("click", () => zoomBy(0.8));
  $("zoom-fit").addEventListener("click", () => {
    Object.assign(view, { zoom: 1, x: 0, y: 0 });
    fitView();
  });
  diagramEl.addEventListener("wheel", (ev) => {
    if (!presenting()) return;
    ev.preventDefault();
    zoomBy(ev.deltaY < 0 ? 1.1 : 1 / 1.1, ev.clientX, ev.clientY);
  }, { passive: false });
  diagramEl.addEventListener("pointerdown", (ev) => {
    if (!presenting() || ev.button !== 0 || ev.target.closest(".dot, .node")) return;
    const start = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y };
    diagramEl.setPointerCapture(ev.pointerId);
    diagramEl.classList.add("is-panning");
    const move = (e) => {
      view.x = start.vx - (e.clientX - start.x) / state.diagramScale;
      view.y = start.vy - (e.clientY - start.y) / state.diagramScale;
      fitView();
    };
    const up = () => {
      diagramEl.removeEventListener("pointermove", move);
      diagramEl.removeEventListener("pointerup", up);
      diagramEl.classList.remove("is-panning");
    };
    diagramEl.addEventListener("pointermove", move);
    diagramEl.addEventListener("pointerup", up);
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && presenting()) presenterToggle.click();
  });

  let resizeTimer = 0;
  new ResizeObserver(() => {
    fitView();
    // A new size may call for the other density; wait until the resizing stops.
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      if (!layout) return;
      const shown = layout;
      chooseLayout(graph).then((L) => {
        if (layout === shown && L.density !== shown.density) renderGraph(serverGraph, true);
      });
    }, 200);
  }).observe(diagramEl);

  // ------------------------------------------------------------------ interaction
  // Hover a node: dim what is not connected to it. Click a queue or a workload: filter
  // the log by it (click again to clear).
  svg.addEventListener("pointerover", (ev) => {
    const g = ev.target.closest(".node");
    if (g) highlight(g.dataset.node);
  });
  svg.addEventListener("pointerout", (ev) => {
    const g = ev.target.closest(".node");
    if (g && !g.contains(ev.relatedTarget)) highlight(null);
  });
  svg.addEventListener("click", (ev) => {
    const dot = ev.target.closest(".dot");
    if (dot) {
      inspectMessage(dot.dataset.messageId);
      return;
    }
    const g = ev.target.closest(".node");
    if (g) filterByNode(g.dataset.node);
  });
  svg.addEventListener("keydown", (ev) => {
    const g = ev.target.closest(".node");
    if (g && (ev.key === "Enter" || ev.key === " ")) {
      ev.preventDefault();
      filterByNode(g.dataset.node);
    }
  });

  function highlight(id) {
    if (!layout) return;
    const keep = new Set(id ? [id] : []);
    if (id) for (const e of layout.edges) if (e.source === id || e.target === id) keep.add(e.source).add(e.target);
    for (const [nid, v] of nodeViews) v.g.classList.toggle("is-dim", !!id && !keep.has(nid));
    for (const el of svg.querySelectorAll(".edge, .edge-label")) {
      const e = edgeViews.get(el.dataset.edge)?.data;
      el.classList.toggle("is-dim", !!id && !!e && e.source !== id && e.target !== id);
    }
  }

  function filterByNode(id) {
    const n = layout?.nodes.get(id);
    if (!n) return;
    const select = n.kind === "queue" ? filters.queue : n.kind === "producer" || n.kind === "consumer" ? filters.workload : null;
    if (!select) return;
    const value = nameOf(id);
    select.value = select.value === value ? "" : value;
    onFilterChange();
  }

  function markSelectedNodes() {
    for (const [id, v] of nodeViews) {
      const name = nameOf(id);
      const on = (v.kind === "queue" && filters.queue.value === name) ||
        ((v.kind === "producer" || v.kind === "consumer") && filters.workload.value === name);
      v.g.classList.toggle("is-selected", on);
    }
  }

  // ================================================================== animation
  // One requestAnimationFrame loop moves every dot and plays every effect; it stops
  // when nothing is moving.
  const dots = [];
  const effects = [];
  let rafId = 0;
  let lastFrameAt = 0;
  let lastTick = 0;
  // The animation's own clock, in milliseconds: it runs at the chosen speed and stands
  // still while the animation is paused, so a dot can be hovered or clicked.
  let clock = 0;

  const animPause = $("anim-pause");
  const animSpeed = $("anim-speed");
  function setPaused(paused) {
    state.animation.paused = paused;
    animPause.setAttribute("aria-pressed", String(paused));
    animPause.textContent = paused ? T.animResume : T.animPause;
    diagramEl.classList.toggle("is-paused", paused);
  }
  animPause?.addEventListener("click", () => setPaused(!state.animation.paused));
  animSpeed?.addEventListener("change", () => {
    state.animation.speed = +animSpeed.value > 0 ? +animSpeed.value : 1;
  });

  function clearDots() {
    dots.length = 0;
    effects.length = 0;
    state.dotsInFlight = 0;
    layers.dots?.replaceChildren();
    layers.fx?.replaceChildren();
  }

  function animateSamples(samples) {
    // While paused, the dots on the diagram stay still and no new ones start.
    if (!layout || document.hidden || state.animation.paused) return;
    const now = performance.now();
    // Spread a frame's samples over the time until the next frame, so they do not move in clumps.
    const spreadMs = Math.min(200, Math.max(0, now - lastFrameAt || 50)) * state.animation.speed;
    lastFrameAt = now;
    samples.forEach((trace, i) => {
      if (dots.length >= MAX_DOTS || !trace || !Array.isArray(trace.path) || !trace.path.length) return;
      const hops = [];
      for (let k = 0; k + 1 < trace.path.length; k++) {
        const hop = hopBetween(trace.path[k], trace.path[k + 1], trace.kind);
        if (hop) hops.push(hop);
      }
      const end = layout.nodes.get(trace.path[trace.path.length - 1]);
      const start = clock + (spreadMs * i) / samples.length;
      if (!hops.length) {
        if (end) effects.push(flashEffect(end, trace.kind, start));
        return;
      }
      const g = s("g", { class: `dot flow-${trace.kind}`, "data-message-id": trace.id ?? "", visibility: "hidden" }, layers.dots);
      s("circle", { r: 11, class: "dot-hit" }, g);
      s("circle", { r: 5, class: "dot-core" }, g);
      g.addEventListener("pointerenter", () => {
        dot.hold = true;
        if (state.animation.paused) inspectMessage(trace.id);
      });
      g.addEventListener("pointerleave", () => (dot.hold = false));
      const dot = { g, hops, start, kind: trace.kind, end, hold: false };
      dots.push(dot);
    });
    state.dotsInFlight = dots.length;
    startLoop();
  }

  // The edge a message takes from one node to the next: the edge itself, or one the
  // other way round travelled backwards (a return goes from the exchange back to the
  // producer), or, when the topology has none, a straight line.
  function hopBetween(from, to, kind) {
    const pick = (ids) => {
      if (!ids) return null;
      const preferred = kind === "dead-lettered" || kind === "expired" ? "dead-letter" : null;
      return edgeViews.get(ids.find((id) => edgeViews.get(id).data.kind === preferred) || ids[0]);
    };
    const fwd = pick(edgeIndex.get(`${from}>${to}`));
    if (fwd) return { samples: fwd.samples, reverse: false, edge: fwd };
    const back = pick(edgeIndex.get(`${to}>${from}`));
    if (back) return { samples: back.samples, reverse: true, edge: back };
    const a = layout.nodes.get(from), b = layout.nodes.get(to);
    if (!a || !b) return null;
    const pa = centreOf(a), pb = centreOf(b);
    return { samples: [[pa.x, pa.y], [pb.x, pb.y]], reverse: false, edge: null };
  }

  function startLoop() {
    if (!rafId) {
      lastTick = performance.now();
      rafId = requestAnimationFrame(tick);
    }
  }

  const ease = (t) => t * t * (3 - 2 * t);

  function tick(realNow) {
    const dt = state.animation.paused ? 0 : (realNow - lastTick) * state.animation.speed;
    lastTick = realNow;
    clock += dt;
    const now = clock;
    for (let i = dots.length - 1; i >= 0; i--) {
      const dot = dots[i];
      if (dot.hold) dot.start += dt;
      const elapsed = now - dot.start;
      if (elapsed < 0) continue;
      const hopIndex = Math.floor(elapsed / HOP_MS);
      if (hopIndex >= dot.hops.length) {
        dot.g.remove();
        dots.splice(i, 1);
        if (dot.end) arrive(dot, now);
        continue;
      }
      const hop = dot.hops[hopIndex];
      const f = ease((elapsed - hopIndex * HOP_MS) / HOP_MS);
      const [x, y] = pointAt(hop.samples, hop.reverse ? 1 - f : f);
      dot.g.setAttribute("transform", `translate(${x.toFixed(1)} ${y.toFixed(1)})`);
      dot.g.setAttribute("visibility", "visible");
    }
    for (let i = effects.length - 1; i >= 0; i--) {
      if (!effects[i](now)) effects.splice(i, 1);
    }
    state.dotsInFlight = dots.length;
    rafId = dots.length || effects.length ? requestAnimationFrame(tick) : 0;
  }

  function arrive(dot, now) {
    if (dot.kind === "unroutable") {
      const last = dot.hops[dot.hops.length - 1];
      const [x, y] = pointAt(last.samples, last.reverse ? 0 : 1);
      effects.push(burstEffect(x, y, now));
    } else if (dot.kind !== "routed" && dot.kind !== "delivered") {
      effects.push(flashEffect(dot.end, dot.kind, now));
    }
  }

  // An outline around the node that grows and fades (acked, rejected, returned, ...).
  function flashEffect(n, kind, start) {
    const d = SHAPES[n.kind](n);
    const el = s("path", { d, class: `fx-ring flow-${kind}`, visibility: "hidden" }, layers.fx);
    const cx = n.x + n.w / 2, cy = n.y + n.h / 2;
    return (now) => {
      const t = (now - start) / 650;
      if (t < 0) return true;
      if (t >= 1) {
        el.remove();
        return false;
      }
      const k = 1 + 0.08 * ease(t);
      el.setAttribute("visibility", "visible");
      el.setAttribute("transform", `translate(${cx - (n.w * k) / 2} ${cy - (n.h * k) / 2}) scale(${k})`);
      el.setAttribute("opacity", (1 - t).toFixed(2));
      return true;
    };
  }

  // Unroutable: a red ring bursts where the message hit the exchange, and an ✕ fades.
  function burstEffect(x, y, start) {
    const g = s("g", { class: "flow-unroutable", transform: `translate(${x} ${y})` }, layers.fx);
    const ring = s("circle", { r: 5, class: "fx-ring" }, g);
    const cross = s("text", { class: "fx-cross", x: 0, y: -16 }, g);
    cross.textContent = "✕";
    return (now) => {
      const t = (now - start) / 800;
      if (t >= 1) {
        g.remove();
        return false;
      }
      ring.setAttribute("r", (5 + 20 * ease(Math.min(1, t * 1.4))).toFixed(1));
      ring.setAttribute("opacity", Math.max(0, 1 - t * 1.4).toFixed(2));
      cross.setAttribute("opacity", (1 - t * t).toFixed(2));
      cross.setAttribute("y", (-14 - 10 * t).toFixed(1));
      return true;
    };
  }

  // ================================================================== counters
  function applyCounters() {
    const { counters } = replaying || state; // a replayed second (replay.js) in place of live
    for (const el of document.querySelectorAll("[data-counter]")) {
      const key = el.dataset.counter;
      const dot = key.lastIndexOf(".");
      const value = counters[key.slice(0, dot)]?.[key.slice(dot + 1)];
      if (value == null) continue;
      const text = fmtInt(value);
      if (el.textContent !== text) {
        el.textContent = text;
        // The Web Animations API restarts the flash without forcing a layout per counter.
        el.animate?.([{ color: "var(--accent)" }, {}], { duration: 450, easing: "ease-out" });
      }
    }
  }

  // The monitor sends the newest events of each frame and says how many there were
  // (`shown.events` = [shown, of]); over the last second or so, say what share we see.
  const shownWindow = [];
  function noteShown(shown) {
    const pair = shown && Array.isArray(shown.events) ? shown.events : null;
    if (!pair) return;
    shownWindow.push(pair);
    if (shownWindow.length > 20) shownWindow.shift();
    let seen = 0;
    let of = 0;
    for (const [a, b] of shownWindow) {
      seen += a;
      of += b;
    }
    const el = $("events-sampled");
    if (!el) return;
    const sampled = of > seen && of > 0;
    el.hidden = !sampled;
    if (sampled) el.textContent = T.sampled(Math.max(2, Math.round(of / Math.max(seen, 1))));
  }

  function setDropped(n) {
    state.dropped = n;
    const el = $("frames-dropped");
    if (!el) return;
    el.hidden = !(n > 0);
    if (n > 0) el.textContent = T.dropped(n);
  }

  // ================================================================== checkpoints
  function applyChecks(checks, live) {
    if (!checks) return;
    for (const [id, passed] of Object.entries(checks)) {
      state.checks[id] = !!passed;
      for (const el of document.querySelectorAll(`[data-checkpoint="${CSS.escape(id)}"]`)) {
        const was = el.dataset.state === "passed";
        if (was === !!passed) continue;
        el.dataset.state = passed ? "passed" : "pending";
        el.classList.toggle("is-passed", !!passed);
        const status = el.querySelector(".checkpoint-status");
        if (status) status.textContent = passed ? T.passed : T.pending;
        if (passed && live) {
          el.classList.add("just-passed");
          setTimeout(() => el.classList.remove("just-passed"), 2400);
        }
      }
    }
    updateSteps(live);
  }

  // The learner sets the pace: a step that completes is marked so and offers "Next step"
  // (the server records when each step was first shown; its checkpoints count only what
  // happens after that). The page never moves on by itself.
  let stepsFolded = false;
  let stepsEl = $("steps");
  // Steps already announced: the steps column the server sends back ("Next step") comes
  // without the page's marks, and a step is said complete once.
  const announced = new Set();

  function updateSteps(live) {
    const steps = document.querySelectorAll("#steps .step");
    const current = document.querySelector("#steps .step.is-current");
    let done = 0, total = 0, newlyComplete = [];
    for (const step of steps) {
      const cps = step.querySelectorAll("[data-checkpoint]");
      const passed = [...cps].filter((c) => c.dataset.state === "passed").length;
      done += passed;
      total += cps.length;
      const complete = cps.length > 0 && passed === cps.length;
      if (complete && !step.classList.contains("is-complete") && live && !announced.has(step.dataset.step)) {
        newlyComplete.push(step);
      }
      if (complete) announced.add(step.dataset.step);
      step.classList.toggle("is-complete", complete);
      step.dataset.state = complete ? "complete" : step.dataset.shown === "true" ? "pending" : "locked";
      const next = step.querySelector(".step-next-btn");
      if (next) {
        next.hidden = passed < cps.length;
        const note = step.querySelector(".step-next-note");
        if (note) note.hidden = !next.hidden;
      }
    }
    const bar = $("steps-progress-bar"), text = $("steps-progress-text");
    if (bar) bar.style.width = total ? `${(100 * done) / total}%` : "0";
    if (text) text.textContent = total ? T.progress(done, total) : "";
    const rail = $("steps-rail-progress");
    if (rail) rail.textContent = total ? `${done}/${total}` : "";
    // The steps done before the current one fold away so it is in view; the current one
    // stays open, complete or not, until the learner moves on.
    if (!stepsFolded) {
      stepsFolded = true;
      for (const step of steps) {
        if (step === current || step.dataset.shown !== "true") continue;
        const details = step.querySelector(":scope > details");
        if (details) details.open = false;
      }
      current?.scrollIntoView({ block: "nearest" });
    }
    for (const step of newlyComplete) {
      step.classList.add("just-completed");
      setTimeout(() => step.classList.remove("just-completed"), 1700);
      toast(T.stepComplete(step.querySelector(".step-title")?.textContent || ""), "ok");
    }
    if (newlyComplete.length && total && done === total) toast(T.allComplete, "ok");
  }

  // A step was opened in another page of the lab (`steps`): this one asks the server for
  // its steps column again, as "Next step" brings it back here.
  function onSteps(m) {
    const shown = new Set(m.shown || []);
    const stale = [...document.querySelectorAll("#steps .step")].some(
      (step) => shown.has(step.dataset.step) !== (step.dataset.shown === "true"));
    if (stale && config.steps_url && window.htmx) {
      window.htmx.ajax("GET", config.steps_url, { target: "#steps", swap: "outerHTML" });
    }
  }

  // "Next step" brings the steps column back from the server with the next step open:
  // the checkpoints then show what this page last heard.
  document.body.addEventListener("htmx:afterSettle", () => {
    if ($("steps") === stepsEl) return;
    stepsEl = $("steps");
    stepsFolded = false;
    applyChecks(Object.fromEntries(Object.entries(state.checks).filter(([, passed]) => passed)), false);
  });

  // ================================================================== workloads
  // A workload was started, stopped or changed (maybe in another tab): flip the card's
  // running state without touching its settings form, so nobody's typing is lost.
  function applyWorkload(name, w) {
    state.workloads[name] = { ...(state.workloads[name] || {}), ...w };
    const card = document.getElementById(`workload-${name}`);
    if (card && typeof w.running === "boolean") {
      card.classList.toggle("is-running", w.running);
      card.dataset.running = String(w.running);
      const label = card.querySelector('[data-role="state"]');
      if (label) label.textContent = w.running ? T.running : T.stopped;
      const action = card.querySelector('[data-role="toggle-action"]');
      if (action) action.value = w.running ? "stop" : "start";
      const button = card.querySelector('[data-role="toggle"]');
      if (button) button.textContent = w.running ? button.dataset.labelStop : button.dataset.labelStart;
    }
    applyWorkloadToDiagram(name);
  }

  // A new label changes the layout (labels are laid out with their size): once for
  // however many workloads a snapshot or a card brings.
  let relabel = 0;
  function applyWorkloadToDiagram(name) {
    const w = state.workloads[name];
    if (!w) return;
    const keys = publishKeys(name);
    const edge = keys == null ? null : graph?.edges.find((e) => e.kind === "publish" && e.source === `p:${name}`);
    if (edge && edge.label !== keys && serverGraph && !relabel) {
      relabel = setTimeout(() => {
        relabel = 0;
        renderGraph(serverGraph, true);
      }, 0);
    }
    for (const prefix of ["p:", "c:"]) {
      const v = nodeViews.get(prefix + name);
      if (!v) continue;
      v.g.classList.toggle("is-stopped", w.running === false);
      const d = v.node.data;
      const detail = workloadDetail({ ...d, id: v.node.id, kind: v.kind });
      if (detail && detail !== d.detail) {
        d.detail = detail;
        v.title.textContent = `${NODE_KINDS[v.kind] || v.kind} ${nodeName(d)} — ${detail}`;
        if (v.detail) v.detail.textContent = fitText(detail, `11px ${FONT}`, v.detailWidth);
      }
    }
  }
  const applyAllWorkloadsToDiagram = () => Object.keys(state.workloads).forEach(applyWorkloadToDiagram);

  // A card re-rendered by htmx starts with zeros: give it the counters we already know.
  document.body.addEventListener("htmx:afterSettle", applyCounters);
  // The publish result appears where the learner is looking: beside the button, in view.
  document.body.addEventListener("htmx:afterSettle", (event) => {
    if (event.target.id === "publish-result") event.target.scrollIntoView({ block: "nearest" });
  });

  // ================================================================== event log
  const filters = { queue: $("log-filter-queue"), workload: $("log-filter-workload"), kind: $("log-filter-kind") };
  const logRows = $("log-rows");
  const logScroll = $("log-scroll");
  const logEmpty = $("log-empty");
  const pauseButton = $("log-pause");
  let logEmptyText = logEmpty.textContent;
  let paused = false;
  let pendingWhilePaused = 0;
  let localSeq = 0;
  let selectedEvent = null;

  function populateLogFilters() {
    const queues = graph.nodes.filter((n) => n.kind === "queue").map((n) => nameOf(n.id));
    const producers = graph.nodes.filter((n) => n.kind === "producer").map((n) => nameOf(n.id));
    const consumers = graph.nodes.filter((n) => n.kind === "consumer").map((n) => nameOf(n.id));
    fillSelect(filters.queue, [[null, queues.map((q) => [q, q])]]);
    fillSelect(filters.workload, [[T.producers, producers.map((w) => [w, workloadName(w)])], [T.consumers, consumers.map((w) => [w, w])]]);
    const kinds = new Set(KNOWN_KINDS);
    for (const ev of state.events) if (ev.kind) kinds.add(ev.kind);
    fillSelect(filters.kind, [[null, [...kinds].map((k) => [k, kindName(k)])]]);
  }

  function fillSelect(select, groups) {
    const current = select.value;
    const first = select.options[0];
    select.replaceChildren(first);
    for (const [label, values] of groups) {
      if (!values.length) continue;
      const parent = label ? select.appendChild(h("optgroup", { label })) : select;
      for (const [v, text] of values) parent.append(h("option", { value: v }, text));
    }
    select.value = [...select.options].some((o) => o.value === current) ? current : "";
  }

  function addKindOption(kind) {
    if (kind && ![...filters.kind.options].some((o) => o.value === kind)) filters.kind.append(h("option", { value: kind }, kindName(kind)));
  }

  function matches(ev) {
    const q = filters.queue.value, w = filters.workload.value, k = filters.kind.value;
    if (moment && !(Math.abs(ev.t - moment.t) <= MOMENT_S)) return false;
    if (q && ev.queue !== q && !(Array.isArray(ev.routed_queues) && ev.routed_queues.includes(q))) return false;
    if (w && ev.workload !== w) return false;
    if (k && ev.kind !== k) return false;
    return true;
  }

  function eventRow(ev, fresh) {
    const route = [];
    const sep = () => h("span", { class: "sep" }, "→");
    if (ev.exchange != null) route.push(h("span", {}, ev.exchange || T.defaultExchange));
    if (ev.routing_key != null && ev.routing_key !== "") route.push(sep(), h("span", {}, ev.routing_key));
    const queues = ev.queue ? [ev.queue] : Array.isArray(ev.routed_queues) ? ev.routed_queues : [];
    if (queues.length) route.push(route.length ? sep() : null, h("span", {}, queues.join(", ")));
    else if (ev.kind === "unroutable") route.push(route.length ? sep() : null, h("span", { class: "muted" }, "✕"));
    else if (ev.kind === "broker" && ev.node) route.push(h("span", {}, ev.node));
    const routeText = route.map((n) => n?.textContent ?? "").join(" ");
    const note =
      ev.kind === "alert" ? alertNote(ev)
      : ev.kind === "load" ? loadNote(ev)
      : ev.kind === "broker" ? brokerNote(ev)
      : ev.message_id ?? ev.message ?? "";
    return h(
      "tr",
      { class: `${fresh ? "is-new" : ""}${selectedEvent === ev ? " is-selected" : ""}${isMoment(ev) ? " is-moment" : ""}`, tabindex: 0, dataset: { seq: ev.seq, kind: ev.kind || "", messageId: ev.message_id ?? "" } },
      h("td", { class: "t", title: fmtTime(ev.t) }, fmtTime(ev.t)),
      h("td", {}, h("span", { class: `kind-badge flow-${ev.kind} kind-${ev.kind}${ev.state === "cleared" ? " is-cleared" : ""}` }, kindName(ev.kind))),
      h("td", { title: workloadName(ev.workload) }, workloadName(ev.workload)),
      h("td", { class: "r", title: routeText }, route, ev.redelivered ? h("span", { class: "redelivered", title: T.redelivered }, "↻") : null),
      h("td", { class: "m", title: note }, note),
    );
  }

  // "dlq-filling fired: ready 12 > 10", "dlq-filling cleared: ready 0"
  function alertNote(ev) {
    const metric = T.alertMetrics[ev.metric] || ev.metric;
    const num = (v) => (v == null ? "–" : Number.isInteger(+v) ? fmtInt(v) : fmtMs(v));
    const value = num(ev.value);
    const limit = ev.above != null ? ` > ${num(ev.above)}` : ` < ${num(ev.below)}`;
    return ev.state === "firing"
      ? `${ev.alert} ${T.alertFired}: ${metric} ${value}${limit}`
      : `${ev.alert} ${T.alertCleared}: ${metric} ${value}`;
  }

  // The node or queue is in the route's column: "killed it" (by you), "down",
  // "leader lab1 → lab3", "2 of 3 online", "down with lab1".
  function brokerNote(ev) {
    if (ev.tracing === "restored") return T.tracingRestored;
    if (ev.action) return T.brokerActions[ev.action] || ev.action;
    if (ev.state) return T.nodeStates[ev.state] || ev.state;
    if (ev.was !== undefined) return T.newLeader(ev.leader, ev.was);
    if (ev.online !== undefined) return T.membersOnline(ev.online, ev.size);
    if (ev.down !== undefined) return ev.down ? T.classicDown(ev.node) : T.classicBack(ev.node);
    return "";
  }

  let clockSkew = 0; // the browser's clock minus the server's, in seconds

  // "stress: 148,211 sent in 30 s · most held: orders 12,340 · p99 2,400 ms · refused 3"
  function loadNote(ev) {
    const preset = T.presets[ev.preset] || ev.preset;
    const parts = [T.loadSent(preset, fmtInt(ev.published), fmtInt(ev.seconds))];
    const peaks = Object.entries(ev.peak || {}).sort((a, b) => b[1] - a[1]).slice(0, 3);
    if (peaks.length) parts.push(`${T.loadPeak}: ${peaks.map(([q, n]) => `${q} ${fmtInt(n)}`).join(", ")}`);
    if (ev.p99_ms != null) parts.push(`p99 ${fmtMs(ev.p99_ms)} ${T.ms}`);
    if (ev.nacked_by_broker) parts.push(`${T.loadRefused} ${fmtInt(ev.nacked_by_broker)}`);
    if (ev.returned) parts.push(`${T.loadReturned} ${fmtInt(ev.returned)}`);
    return parts.join(" · ");
  }

  // ------------------------------------------------------------------ load presets
  // Under a producer's card: its load running, with the time left, or what the last did.
  let loadStates = {};
  function applyLoads(loads, serverT) {
    if (!loads) return;
    if (typeof serverT === "number") clockSkew = Date.now() / 1000 - serverT;
    loadStates = loads;
    showLoads();
  }
  function showLoads() {
    for (const [name, l] of Object.entries(loadStates)) {
      const el = document.querySelector(`.load-status[data-load="${CSS.escape(name)}"]`);
      if (!el) continue;
      const preset = T.presets[l.preset] || l.preset;
      const left = Math.max(0, Math.ceil(l.until - (Date.now() / 1000 - clockSkew)));
      const text = l.state === "running" ? T.loadRunning(preset, fmtInt(l.rate), fmtInt(left)) : loadNote(l);
      if (el.textContent !== text) el.textContent = text;
      el.dataset.state = l.state;
      el.hidden = false;
    }
  }
  setInterval(() => Object.values(loadStates).some((l) => l.state === "running") && showLoads(), 1000);

  // ------------------------------------------------------------------ alert rules
  // Each rule's chip shows its state, and for how long; a firing rule outlines its queue.
  const alertChips = new Map([...document.querySelectorAll("#alerts [data-alert]")].map((el) => [el.dataset.alert, el]));
  let alertStates = {};
  function applyAlerts(alerts, serverT) {
    if (!alertChips.size || !alerts) return;
    if (typeof serverT === "number") clockSkew = Date.now() / 1000 - serverT;
    alertStates = alerts;
    showAlerts();
  }
  function showAlerts() {
    const firingQueues = new Set();
    for (const [name, el] of alertChips) {
      const a = alertStates[name] || { state: "ok" };
      const seconds = a.since == null ? 0 : Math.max(0, Math.round(Date.now() / 1000 - clockSkew - a.since));
      const word = T.alert[a.state];
      const text = typeof word === "function" ? word(fmtInt(seconds)) : word || a.state;
      if (el.dataset.state !== a.state) el.dataset.state = a.state;
      const stateEl = el.querySelector(".alert-state");
      if (stateEl.textContent !== text) stateEl.textContent = text;
      if (a.state === "firing") firingQueues.add(el.dataset.queue);
    }
    for (const v of nodeViews.values()) {
      if (v.kind === "queue") v.g.classList.toggle("is-alerting", firingQueues.has(nameOf(v.node.id)));
    }
  }
  if (alertChips.size) setInterval(() => Object.values(alertStates).some((a) => a.state === "pending" || a.state === "firing") && showAlerts(), 1000);
  // Toasts open at the top of the diagram: below the alert rules, never over them.
  const alertsBar = document.getElementById("alerts");
  if (alertsBar) {
    new ResizeObserver(() => {
      const bottom = alertsBar.getBoundingClientRect().bottom;
      document.documentElement.style.setProperty("--toasts-top", `${Math.round(bottom + 8)}px`);
    }).observe(alertsBar);
  }

  // ================================================================== brokers' timeline
  // A lab on brokers of its own (#timeline): what happened to its nodes and queues, oldest
  // first, as its monitor keeps it: all of it in a snapshot, what is new in every frame
  // (never sampled out, as the log's events are), so a fault stays on the page when the
  // log has moved on. Clicking an event shows the log around that moment.
  const timelineEl = $("timeline");
  const timelineList = $("timeline-list");
  const momentButton = $("log-moment");
  const MOMENT_S = 10; // the log around a moment: this many seconds either side
  const relativeTime = new Intl.RelativeTimeFormat(LANG, { numeric: "auto" });
  const exactTime = new Intl.DateTimeFormat(LANG, { dateStyle: "medium", timeStyle: "medium" });
  let moment = null; // the timeline's event whose moment the log shows
  state.timeline = []; // oldest first

  function ago(t) {
    const seconds = Math.max(0, Math.round(Date.now() / 1000 - clockSkew - t));
    if (seconds < 60) return relativeTime.format(-seconds, "second");
    if (seconds < 3600) return relativeTime.format(-Math.floor(seconds / 60), "minute");
    return relativeTime.format(-Math.floor(seconds / 3600), "hour");
  }

  // down / up for what a node or a classic queue did, fault for what a learner did.
  function timelineTone(ev) {
    if (ev.action) return "fault";
    if (ev.state === "down" || ev.state === "stopped" || ev.down === true) return "down";
    if (ev.state === "running" || ev.down === false) return "up";
    return "change";
  }

  function timelineItem(ev) {
    const f = ev.flow;
    const flow = f ? [T.timelineFlow(f), f.missing ? T.timelineMissing(f.missing) : null].filter(Boolean).join(" · ") : "";
    return h(
      "li",
      { class: `timeline-event tone-${timelineTone(ev)}`, dataset: { n: ev.n ?? "", node: ev.node || "", queue: ev.queue || "", workload: ev.workload || "" } },
      h(
        "button",
        { type: "button", class: "timeline-button", "aria-pressed": String(moment === ev), title: T.timelineShowLog, onclick: () => showMoment(moment === ev ? null : ev) },
        h("span", { class: "tl-when" },
          h("time", { class: "tl-ago", datetime: new Date(ev.t * 1000).toISOString(), title: `${exactTime.format(new Date(ev.t * 1000))} (${fmtTime(ev.t)})` }, ago(ev.t)),
          ev.action ? h("span", { class: "tl-who" }, workloadName(ev.workload)) : null),
        h("span", { class: "tl-what" }, h("b", {}, ev.queue || ev.node || ""), " ", brokerNote(ev)),
        flow ? h("span", { class: "tl-flow" }, flow) : null,
      ),
    );
  }

  // A snapshot's timeline replaces ours; a frame's adds what we do not have yet (by `n`:
  // a frame sent before the snapshot may arrive after it).
  function applyTimeline(events, replace) {
    if (!timelineEl || !Array.isArray(events)) return;
    if (replace) state.timeline = [];
    const last = state.timeline.length ? state.timeline[state.timeline.length - 1].n : 0;
    const fresh = events.filter((ev) => ev && typeof ev === "object" && (replace || !(ev.n <= last)));
    if (!fresh.length && !replace) return;
    state.timeline.push(...fresh);
    if (moment) moment = state.timeline.find((ev) => ev.n === moment.n && ev.t === moment.t) || null;
    const atEnd = timelineList.scrollLeft + timelineList.clientWidth >= timelineList.scrollWidth - 8;
    if (replace) timelineList.replaceChildren(...state.timeline.map(timelineItem));
    else timelineList.append(...fresh.map(timelineItem));
    $("timeline-empty").hidden = state.timeline.length > 0;
    // Newest on the right: follow it, unless the reader scrolled back to read.
    if (replace || atEnd) timelineList.scrollLeft = timelineList.scrollWidth;
    if (replace) updateMoment();
  }

  function showMoment(ev) {
    moment = ev;
    updateMoment();
    renderLog();
    // The row of the event itself (marked by eventRow), if the log still has it, in view.
    logRows.querySelector("tr.is-moment")?.scrollIntoView({ block: "center" });
  }
  const isMoment = (ev) => moment !== null && ev.kind === "broker" && ev.n === moment.n;

  function updateMoment() {
    if (!momentButton) return;
    momentButton.hidden = !moment;
    if (moment) momentButton.querySelector(".log-moment-text").textContent = T.logMoment(fmtTime(moment.t).slice(0, 8), MOMENT_S);
    for (const [i, li] of [...timelineList.children].entries()) {
      li.firstElementChild.setAttribute("aria-pressed", String(state.timeline[i] === moment));
    }
  }
  momentButton?.addEventListener("click", () => showMoment(null));
  if (timelineEl) {
    setInterval(() => {
      for (const [i, el] of [...timelineList.querySelectorAll(".tl-ago")].entries()) {
        const text = ago(state.timeline[i].t);
        if (el.textContent !== text) el.textContent = text;
      }
    }, 1000);
  }

  function renderLog() {
    unflushed = [];
    // A replayed second (replay.js) keeps its own rows, whatever redraws the log (a filter
    // changed, a reconnect's snapshot, pause): live rows come back with "Back to live".
    if (replaying) return renderReplayLog();
    const rows = [];
    for (let i = state.events.length - 1; i >= 0 && rows.length < MAX_EVENTS; i--) {
      if (matches(state.events[i])) rows.push(eventRow(state.events[i], false));
    }
    logRows.replaceChildren(...rows);
    logEmpty.hidden = rows.length > 0;
    if (!rows.length && moment) logEmpty.textContent = T.logMomentGone;
    else if (!rows.length) logEmpty.textContent = logEmptyText;
    pendingWhilePaused = 0;
    updatePauseButton();
  }

  // New rows reach the DOM at most LOG_FLUSH_MS apart, however fast events arrive: at a
  // few thousand messages a second the log must not be what slows the page down.
  const LOG_FLUSH_MS = 200;
  const LOG_ROWS_PER_FLUSH = 60;
  let unflushed = [];
  let flushTimer = 0;
  let lastFlush = 0;

  function addEvents(events) {
    let added = 0;
    for (const ev of events) {
      if (!ev || typeof ev !== "object") continue;
      if (ev.seq == null) ev.seq = `local-${++localSeq}`;
      state.events.push(ev);
      unflushed.push(ev);
      addKindOption(ev.kind);
      added++;
    }
    const overflow = state.events.length - MAX_EVENTS;
    if (overflow > 0) state.events.splice(0, overflow);
    if (unflushed.length > MAX_EVENTS) unflushed = unflushed.slice(-MAX_EVENTS);
    if (paused) {
      pendingWhilePaused += added;
      unflushed = [];
      updatePauseButton();
      return;
    }
    if (!flushTimer) flushTimer = setTimeout(flushLog, Math.max(0, lastFlush + LOG_FLUSH_MS - performance.now()));
  }

  function flushLog() {
    flushTimer = 0;
    lastFlush = performance.now();
    // Nobody reads more than a screenful in 200 ms: at high rates only the newest rows
    // go in now (the rest are in state.events: pause, or change a filter, to see them),
    // and only a trickle of rows is worth a highlight.
    const fresh = unflushed.filter(matches).slice(-LOG_ROWS_PER_FLUSH);
    unflushed = [];
    if (!fresh.length || paused || replaying) return;
    const keepScroll = logScroll.scrollTop > 4;
    const before = logScroll.scrollHeight;
    const frag = document.createDocumentFragment();
    const highlight = fresh.length <= 20;
    for (let i = fresh.length - 1; i >= 0; i--) frag.append(eventRow(fresh[i], highlight));
    logRows.prepend(frag);
    while (logRows.rows.length > MAX_EVENTS) logRows.lastElementChild.remove();
    logEmpty.hidden = true;
    // Someone reading further down keeps their place while new rows arrive on top.
    if (keepScroll) logScroll.scrollTop += logScroll.scrollHeight - before;
  }

  function updatePauseButton() {
    pauseButton.setAttribute("aria-pressed", String(paused));
    pauseButton.querySelector(".log-pause-text").textContent = paused ? (pendingWhilePaused ? T.resumeN(pendingWhilePaused) : T.resume) : T.pause;
  }

  function onFilterChange() {
    markSelectedNodes();
    renderLog();
  }
  for (const select of Object.values(filters)) select.addEventListener("change", onFilterChange);
  pauseButton.addEventListener("click", () => {
    if (!paused) {
      // What arrived before the click is drawn first: rows wait up to LOG_FLUSH_MS for
      // their batch, and a paused log takes no more.
      clearTimeout(flushTimer);
      flushLog();
    }
    paused = !paused;
    if (!paused) renderLog();
    else updatePauseButton();
  });
  $("log-clear").addEventListener("click", () => {
    state.events = [];
    renderLog();
  });
  const rowEvent = (tr) => state.events.find((e) => String(e.seq) === tr.dataset.seq);
  logRows.addEventListener("click", (ev) => {
    const tr = ev.target.closest("tr");
    const e = tr && rowEvent(tr);
    if (e) openInspector(e);
  });
  logRows.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      const e = rowEvent(tr);
      if (e) openInspector(e);
    } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      ev.preventDefault();
      (ev.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling)?.focus();
    }
  });

  // ================================================================== inspector
  // Hidden until a message is chosen, so the log has the whole width the rest of the time.
  const inspector = $("inspector");
  const inspectorBody = $("inspector-body");
  const lowerEl = inspector.parentElement;
  $("inspector-close").addEventListener("click", closeInspector);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape" && selectedEvent && !ev.target.closest("input, textarea, select")) closeInspector();
  });

  function inspectMessage(messageId) {
    if (messageId) {
      for (let i = state.events.length - 1; i >= 0; i--) {
        if (String(state.events[i].message_id) === String(messageId)) return openInspector(state.events[i]);
      }
    }
    toast(T.notInLog, "info");
  }

  function closeInspector() {
    selectedEvent = null;
    inspector.hidden = true;
    lowerEl.classList.remove("has-inspector");
    inspectorBody.replaceChildren();
    for (const tr of logRows.querySelectorAll(".is-selected")) tr.classList.remove("is-selected");
  }

  function openInspector(ev) {
    selectedEvent = ev;
    for (const tr of logRows.rows) tr.classList.toggle("is-selected", tr.dataset.seq === String(ev.seq));
    inspector.hidden = false;
    lowerEl.classList.add("has-inspector");
    inspector.dataset.messageId = ev.message_id ?? "";
    inspector.dataset.seq = ev.seq;
    inspector.animate?.([{ boxShadow: "0 0 0 3px color-mix(in srgb, var(--focus) 45%, transparent)" }, { boxShadow: "none" }], { duration: 600, easing: "ease-out" });

    const parts = [];
    parts.push(
      h("div", { class: "insp-title" },
        h("span", { class: `kind-badge flow-${ev.kind} kind-${ev.kind}` }, kindName(ev.kind)),
        ev.message_id != null ? h("code", { title: "message_id" }, ev.message_id) : null,
        h("span", { class: "muted mono" }, fmtTime(ev.t)),
      ),
    );

    const route = [];
    if (ev.workload) route.push([T.workload, workloadName(ev.workload)]);
    if (ev.exchange != null) route.push([T.exchange, ev.exchange || T.defaultExchange]);
    if (ev.routing_key != null) route.push([T.routingKey, ev.routing_key]);
    if (ev.queue) route.push([T.queue, ev.queue]);
    if (Array.isArray(ev.routed_queues)) route.push([T.routedQueues, ev.routed_queues.length ? ev.routed_queues.join(", ") : "✕"]);
    if (ev.redelivered) route.push([T.redelivered, T.yes]);
    if (ev.reason) route.push([T.reason, ev.reason]);
    if (ev.reply) route.push([T.reply, ev.reply]);
    if (ev.message && !ev.reason) route.push([T.reason, ev.message]); // an error, a crash
    if (route.length) parts.push(kvTable(route));

    if (ev.body !== undefined) parts.push(section(T.body, bodyView(ev.body)));

    const props = ev.properties && typeof ev.properties === "object" ? Object.entries(ev.properties).filter(([k]) => k !== "headers") : [];
    if (props.length) parts.push(section(T.properties, kvTable(props)));

    const headers = { ...(ev.headers || ev.properties?.headers || {}) };
    const xDeath = ev.x_death || headers["x-death"];
    delete headers["x-death"];
    const headerRows = Object.entries(headers);
    if (headerRows.length) parts.push(section(T.headers, kvTable(headerRows)));
    if (Array.isArray(xDeath) && xDeath.length) parts.push(section(T.xDeath, xDeathTable(xDeath)));

    const journeyList = (events) => h("ol", { class: "journey" }, events.map((e) =>
      h("li", { class: `flow-${e.kind}${e === ev ? " is-current" : ""}`, onclick: () => openInspector(e) },
        h("span", { class: "t" }, fmtTime(e.t)), kindName(e.kind), e.queue ? ` · ${e.queue}` : "", e.workload ? ` · ${workloadName(e.workload)}` : ""),
    ));
    if (ev.message_id != null) {
      const journey = causalOrder(state.events.filter((e) => String(e.message_id) === String(ev.message_id)));
      if (journey.length > 1) parts.push(section(T.journey, journeyList(journey)));
    }
    // RPC: a request and its reply are two messages joined by their correlation_id.
    const correlation = ev.properties?.correlation_id;
    if (correlation != null) {
      const joined = causalOrder(state.events.filter((e) => e.properties?.correlation_id === correlation));
      if (joined.length > 1) parts.push(section(`correlation_id ${correlation}`, journeyList(joined)));
    }
    inspectorBody.replaceChildren(...parts);
    inspectorBody.scrollTop = 0;
  }

  // Events of one message by time, but timestamps come from different processes: the
  // monitor stamps a publish when the firehose brings it, a workload its own deliveries
  // and settlements, a few milliseconds apart either way. So within the clocks' skew, and
  // only there, two events that must come in one order are put in it: a publish before
  // another workload's event on a queue it routed to (its delivery, ack, ...), and a
  // consumer's delivery before its own republish of it (parking, an RPC reply). Nothing
  // else moves: redeliveries and rejections 100 ms apart keep their times' order.
  const CLOCK_SKEW_MS = 250;
  const PUBLISHES = new Set(["published", "unroutable", "returned"]);
  const republished = (e) => e.kind === "published" && state.workloads[e.workload]?.kind === "consumer";

  function goesBefore(later, earlier) {
    if (PUBLISHES.has(later.kind) && earlier.workload !== later.workload && earlier.queue) {
      return Array.isArray(later.routed_queues) && later.routed_queues.includes(earlier.queue);
    }
    return later.kind === "delivered" && republished(earlier) && earlier.workload === later.workload;
  }

  function causalOrder(events) {
    const out = [...events].sort((a, b) => (a.t || 0) - (b.t || 0));
    for (let i = 1; i < out.length; i++) {
      for (let j = i; j > 0; j--) {
        const a = out[j - 1], b = out[j];
        if (((b.t || 0) - (a.t || 0)) * 1000 > CLOCK_SKEW_MS || !goesBefore(b, a)) break;
        out[j - 1] = b;
        out[j] = a;
      }
    }
    return out;
  }

  function section(title, content, note) {
    return h("div", { class: "insp-section" }, h("h3", {}, title, note ? h("small", {}, note) : null), content);
  }

  const show = (v) => (v == null ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));

  function kvTable(rows) {
    return h("table", { class: "kv" }, h("tbody", {}, rows.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, show(v))))));
  }

  function xDeathTable(entries) {
    const cols = ["count", "reason", "queue", "exchange", "routing-keys", "time"];
    return h("div", { style: "overflow-x:auto" }, h("table", { class: "kv x-death" },
      h("thead", {}, h("tr", {}, T.xDeathCols.map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, entries.map((d) => h("tr", {}, cols.map((c) => {
        let v = d[c] ?? d[c.replace("-", "_")];
        if (c === "time" && v != null) v = typeof v === "number" ? fmtTime(v) : v;
        return h("td", {}, Array.isArray(v) ? v.join(", ") : show(v));
      })))),
    ));
  }

  // Pretty-print a JSON body (with a little colour), otherwise show the text as it is.
  function bodyView(body) {
    let value, isJson = false;
    if (body !== null && typeof body === "object") {
      value = body;
      isJson = true;
    } else {
      const text = body == null ? "" : String(body);
      try {
        value = JSON.parse(text);
        isJson = typeof value === "object" && value !== null;
      } catch {
        isJson = false;
      }
      if (!isJson) {
        const pre = h("pre", { class: "body-pre" }, text === "" ? h("span", { class: "muted" }, T.emptyBody) : text);
        return text.length >= 2048 ? h("div", {}, pre, h("p", { class: "muted" }, T.truncated)) : pre;
      }
    }
    const pre = h("pre", { class: "body-pre" });
    const json = JSON.stringify(value, null, 2);
    const re = /("(?:\\u[0-9a-fA-F]{4}|\\[^u]|[^\\"])*"(\s*:)?|\b(?:true|false|null)\b|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)/g;
    let last = 0;
    for (const m of json.matchAll(re)) {
      if (m.index > last) pre.append(json.slice(last, m.index));
      const tok = m[0];
      const cls = tok.startsWith('"') ? (m[2] ? "json-key" : "json-str") : /^(true|false|null)$/.test(tok) ? "json-lit" : "json-num";
      pre.append(h("span", { class: cls }, tok));
      last = m.index + tok.length;
    }
    pre.append(json.slice(last));
    return pre;
  }

  // ================================================================== steps panel
  // On a laptop the diagram wants the room: the steps fold into a narrow rail.
  const workspaceEl = labEl.querySelector(".workspace");
  const stepsToggle = $("steps-toggle");
  const STEPS_KEY = "labconsole.stepsCollapsed";
  function setStepsCollapsed(collapsed, save) {
    workspaceEl.classList.toggle("steps-collapsed", collapsed);
    stepsToggle.setAttribute("aria-expanded", String(!collapsed));
    if (save) {
      try {
        localStorage.setItem(STEPS_KEY, collapsed ? "1" : "");
      } catch {
        // Not remembered, then.
      }
    }
  }
  try {
    if (localStorage.getItem(STEPS_KEY)) setStepsCollapsed(true, false);
  } catch {
    // Storage off.
  }
  stepsToggle.addEventListener("click", (ev) => {
    ev.stopPropagation();
    setStepsCollapsed(!workspaceEl.classList.contains("steps-collapsed"), true);
  });
  stepsToggle.parentElement.addEventListener("click", () => {
    if (workspaceEl.classList.contains("steps-collapsed")) setStepsCollapsed(false, true);
  });

  // ================================================================== splitter
  // Drag (or arrow keys) to share the height between the diagram and the log; the share
  // is remembered. On a laptop the centre column is not a box of its own (the diagram
  // spans the controls' column too, console.css): the share is measured from the top of
  // the diagram to the bottom of the log, and set as two grid fractions on the workspace.
  const diagramPanel = $("diagram").parentElement;
  const SPLIT_KEY = "labconsole.split";
  const splitRect = () => {
    const top = diagramPanel.getBoundingClientRect().top, bottom = lowerEl.getBoundingClientRect().bottom;
    return { top, height: bottom - top };
  };
  function setSplit(share, save) {
    share = Math.max(0.25, Math.min(0.85, share));
    workspaceEl.style.setProperty("--split-diagram", `${share}fr`);
    workspaceEl.style.setProperty("--split-lower", `${1 - share}fr`);
    $("splitter").setAttribute("aria-valuenow", Math.round(share * 100));
    if (save) {
      try {
        localStorage.setItem(SPLIT_KEY, String(share));
      } catch {
        // Not remembered, then.
      }
    }
  }
  try {
    const saved = parseFloat(localStorage.getItem(SPLIT_KEY));
    if (saved > 0 && saved < 1) setSplit(saved, false);
  } catch {
    // Storage off: the default from the stylesheet stays.
  }
  $("splitter").addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    const splitter = ev.currentTarget;
    splitter.setPointerCapture(ev.pointerId);
    splitter.classList.add("is-dragging");
    const rect = splitRect();
    const move = (e) => setSplit((e.clientY - rect.top) / rect.height, false);
    const up = (e) => {
      splitter.removeEventListener("pointermove", move);
      splitter.removeEventListener("pointerup", up);
      splitter.classList.remove("is-dragging");
      setSplit((e.clientY - rect.top) / rect.height, true);
    };
    splitter.addEventListener("pointermove", move);
    splitter.addEventListener("pointerup", up);
  });
  $("splitter").addEventListener("keydown", (ev) => {
    if (ev.key !== "ArrowUp" && ev.key !== "ArrowDown") return;
    ev.preventDefault();
    const rect = splitRect();
    const current = diagramPanel.getBoundingClientRect().height / rect.height;
    setSplit(current + (ev.key === "ArrowDown" ? 0.05 : -0.05), true);
  });

  // ================================================================== status, connection
  const connEl = $("connection");
  const staleEl = $("diagram-stale");

  function setConnection(conn, text) {
    state.connection = conn;
    state.connected = conn === "live";
    if (connEl) {
      connEl.dataset.state = conn;
      connEl.querySelector(".conn-text").textContent = text || T.conn[conn];
    }
    const stale = (conn === "reconnecting" || conn === "disconnected") && !isOver(state.labState);
    staleEl.hidden = !stale;
    labEl.classList.toggle("is-stale", stale);
  }

  // The lab is over: every tab of it shows the last numbers it had (`kept` false: none were
  // kept) and says so once, in the banner; its workloads are stopped.
  function endLab(labState, kept = true) {
    state.labState = labState;
    labEl.dataset.labState = labState;
    stopSocket();
    setConnection("disconnected");
    if (connEl) connEl.hidden = true;
    const banner = $("lab-ended");
    banner.hidden = false;
    banner.querySelector(".banner-title").textContent = labState === "failed" ? T.failedTitle : T.endedTitle;
    banner.querySelector(".banner-message").textContent = kept ? T.endedKept : T.endedNotKept;
    logEmpty.textContent = logEmptyText = T.logNotKept;
    const names = new Set(Object.keys(state.workloads));
    for (const card of document.querySelectorAll(".workload-card[data-workload]")) names.add(card.dataset.workload);
    for (const name of names) applyWorkload(name, { running: false });
    // The controls stay readable (the last settings are worth seeing) but do nothing.
    for (const form of $("controls").querySelectorAll("form")) {
      form.inert = true;
      form.closest(".card")?.classList.add("is-disabled");
      for (const el of form.elements) el.disabled = true;
    }
    const actions = $("lab-actions");
    if (actions) actions.hidden = true;
    clearDots();
  }

  // The server lost RabbitMQ: the socket stays open and the server reconnects by itself,
  // then says broker-back and sends a fresh snapshot. Texts come from T, by state.
  let brokerBackTimer = 0;
  function setBroker(available) {
    clearTimeout(brokerBackTimer);
    brokerBackTimer = 0;
    const was = state.broker;
    state.broker = available ? "ok" : "unavailable";
    if (!available) return setConnection("reconnecting", T.brokerUnavailable);
    if (was !== "unavailable" || !ws) return undefined;
    setConnection("live", T.brokerBack);
    brokerBackTimer = setTimeout(() => {
      if (state.connection === "live") setConnection("live");
    }, BROKER_BACK_MS);
    return undefined;
  }

  function onStatus(m) {
    if (m.state === "broker-unavailable") setBroker(false);
    else if (m.state === "broker-back") setBroker(true);
    // The lab's monitor fell silent (its worker died) and is being taken over.
    else if (m.state === "monitor-silent") setConnection("reconnecting", T.monitorSilent);
    else if (m.state === "monitor-back") {
      if (state.broker !== "unavailable") setConnection("live");
    }
    else if (isOver(m.state)) endLab(m.state);
    // A reset makes the lab anew (new workloads, checkpoints pending): start the page over.
    else if (m.state === "reset") location.reload();
    else if (m.state === "class-message") showClassMessage(m.message);
    else if (m.message) toast(m.message, "info");
  }

  // The instructor's message to the class (docs/classes.md): shown until dismissed, and
  // again when a new one comes.
  const classMessageEl = $("class-message");
  function showClassMessage(text) {
    if (!classMessageEl || !text) return;
    $("class-message-text").textContent = text;
    classMessageEl.hidden = false;
  }
  $("class-message-close")?.addEventListener("click", () => { classMessageEl.hidden = true; });

  function onSnapshot(m) {
    state.snapshotsReceived++;
    state.counters = m.counters || {};
    state.queues = m.queues || {};
    state.exchanges = m.exchanges || {};
    if (m.graph || serverGraph) renderGraph(m.graph || serverGraph);
    rateHistory.length = 0;
    state.workloads = {};
    for (const [name, w] of Object.entries(m.workloads || {})) applyWorkload(name, w);
    state.checks = {};
    applyChecks(m.checks, false);
    applyAlerts(m.alerts, m.t);
    applyLoads(m.loads, m.t);
    state.events = [];
    addEvents(m.events || []);
    if (typeof m.t === "number") clockSkew = Date.now() / 1000 - m.t;
    applyTimeline(m.timeline || [], true);
    populateLogFilters();
    renderLog();
    if (selectedEvent) {
      const again = state.events.find((e) => e.seq === selectedEvent.seq);
      again ? openInspector(again) : closeInspector();
    }
    recordRates();
    applyCounters();
    renderStats();
    if (isOver(m.lab?.state)) endLab(m.lab.state, m.kept !== false);
  }

  function showReplay(second) {
    replaying = second;
    applyCounters();
    renderStats();
    clearDots();
    renderReplayLog();
  }

  function renderReplayLog() {
    const events = replaying.events;
    const rows = [];
    for (let i = events.length - 1; i >= 0; i--) if (matches(events[i])) rows.push(eventRow(events[i], false));
    logRows.replaceChildren(...rows);
    logEmpty.hidden = rows.length > 0;
    if (!rows.length) logEmpty.textContent = logEmptyText;
  }

  function backToLive() {
    replaying = null;
    renderLog();
    applyCounters();
    renderStats();
  }

  function onFrame(m) {
    state.framesReceived++;
    if (typeof m.t === "number") state.liveT = m.t;
    // Counters are cumulative and exact: the newest value wins.
    if (m.counters) for (const [name, c] of Object.entries(m.counters)) state.counters[name] = { ...(state.counters[name] || {}), ...c };
    if (m.queues) Object.assign(state.queues, m.queues);
    if (m.exchanges) {
      Object.assign(state.exchanges, m.exchanges);
      if (serverGraph && Object.values(m.exchanges).some((x) => x?.from_you)) renderGraph(serverGraph);
    }
    if (m.checks) applyChecks(m.checks, true);
    if (m.alerts) applyAlerts(m.alerts, m.t);
    if (m.loads) applyLoads(m.loads, m.t);
    if (Array.isArray(m.events) && m.events.length) addEvents(m.events);
    if (m.timeline) applyTimeline(m.timeline, false);
    recordRates();
    if (replaying) return;
    if (Array.isArray(m.samples) && m.samples.length) animateSamples(m.samples);
    if (typeof m.dropped === "number") setDropped(m.dropped);
    noteShown(m.shown);
    applyCounters();
    renderStats();
  }

  function dispatch(m) {
    switch (m.type) {
      case "snapshot": return onSnapshot(m);
      case "frame": return onFrame(m);
      case "workload": return applyWorkload(m.name, m);
      case "status": return onStatus(m);
      case "topology": return onTopology(m); // see "topology edits" below
      case "steps": return onSteps(m);
      // A sandbox's "People here" (static/labconsole/lab/sandbox.js).
      case "presence": return document.dispatchEvent(new CustomEvent("lab:presence", { detail: m }));
      case "error": return toast(`${T.refused}: ${m.message}`, "error");
      default: return undefined; // pong, and anything newer than this page
    }
  }

  // One socket; on close, retry forever with backoff (0.5, 1, 2, 4, then every 5 s), which
  // starts over once a socket delivered its snapshot and stayed open STABLE_MS; 4403 and
  // 4404 are final. The server answers every (re)connection with a snapshot that replaces
  // our state. A lost broker does not close the socket (see setBroker).
  // Messages from the viewer's queue carry `d`, their number on this socket: the server
  // sends at most 40 unacknowledged ones, so acknowledge every ACK_EVERY or ACK_AFTER_MS.
  let ws = null;
  let attempt = 0;
  let retryTimer = 0;
  let stableTimer = 0;
  let pingTimer = 0;
  let stopped = false;
  let received = 0; // highest `d` on this socket
  let acked = 0;
  let ackTimer = 0;

  function noteDelivery(d) {
    if (!Number.isInteger(d) || d <= received) return;
    received = d;
    if (received - acked >= ACK_EVERY) sendAck();
    else if (!ackTimer) ackTimer = setTimeout(sendAck, ACK_AFTER_MS);
  }

  function sendAck() {
    clearTimeout(ackTimer);
    ackTimer = 0;
    if (received > acked && send({ type: "ack", d: received })) acked = received;
  }

  function wsUrl() {
    return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.ws_url}`;
  }

  function connectNow() {
    if (stopped) return;
    clearTimeout(retryTimer);
    if (ws) {
      const old = ws;
      ws = null;
      old.close();
    }
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    ws = sock;
    received = acked = 0;
    clearTimeout(ackTimer);
    ackTimer = 0;
    clearTimeout(stableTimer);
    stableTimer = 0;
    sock.onopen = () => {
      if (ws !== sock) return;
      state.broker = "ok"; // until this server says otherwise
      setConnection("live");
      clearInterval(pingTimer);
      pingTimer = setInterval(() => send({ type: "ping" }), PING_MS);
    };
    sock.onmessage = (event) => {
      if (ws !== sock) return;
      let m;
      try {
        m = JSON.parse(event.data);
      } catch {
        return;
      }
      if (!m || typeof m !== "object") return;
      dispatch(m);
      if (m.d != null) noteDelivery(m.d);
      if (m.type === "snapshot" && !stableTimer) {
        stableTimer = setTimeout(() => {
          if (ws === sock && sock.readyState === WebSocket.OPEN) attempt = 0;
        }, STABLE_MS);
      }
    };
    sock.onclose = (event) => {
      if (ws !== sock) return;
      ws = null;
      clearInterval(pingTimer);
      clearTimeout(ackTimer);
      ackTimer = 0;
      clearTimeout(stableTimer);
      stableTimer = 0;
      clearTimeout(brokerBackTimer);
      brokerBackTimer = 0;
      if (stopped) return;
      if (event.code === 4403 || event.code === 4404) {
        stopped = true;
        setConnection("disconnected", T.connRefused[event.code]);
        return;
      }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)];
    attempt++;
    setConnection("reconnecting");
    retryTimer = setTimeout(connectNow, delay);
  }

  function send(message) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(message));
    return true;
  }

  function stopSocket() {
    stopped = true;
    clearTimeout(retryTimer);
    clearTimeout(stableTimer);
    clearTimeout(brokerBackTimer);
    clearTimeout(ackTimer);
    clearInterval(pingTimer);
    if (ws) {
      const old = ws;
      ws = null;
      old.close(1000);
    }
  }

  window.addEventListener("online", () => {
    if (!stopped && !ws) {
      attempt = 0;
      connectNow();
    }
  });
  // Leaving the page is not a lost connection; coming back from the back/forward cache is
  // a new one.
  window.addEventListener("pagehide", () => {
    if (ws) ws.onclose = null;
  });
  window.addEventListener("pageshow", (event) => {
    if (event.persisted && !stopped) {
      attempt = 0;
      connectNow();
    }
  });

  // ------------------------------------------------------------------ topology edits
  // The owner changed the lab's topology from the Topology panel (docs/live-protocol.md,
  // `topology`): every viewer draws the new graph at once, the publish form offers the
  // lab's exchanges as they now are, and a Topology panel that shows another version of
  // the topology asks the server for itself again (its lists of what there is). Nothing
  // else in this file depends on this block.
  function onTopology(m) {
    if (m.graph) renderGraph(m.graph);
    const select = document.querySelector("#publish-form select[name=exchange]");
    if (select && Array.isArray(m.exchanges)) {
      const chosen = select.value;
      select.replaceChildren(...m.exchanges.map((name) => h("option", { value: name }, name || T.defaultExchange)));
      select.value = m.exchanges.includes(chosen) ? chosen : "";
    }
    const panel = $("topology-panel");
    if (panel && m.version && panel.dataset.version !== m.version && window.htmx) {
      window.htmx.ajax("GET", panel.dataset.panelUrl, { target: "#topology-panel", swap: "outerHTML" });
    }
    if (m.change?.kind === "workload") onSandboxWorkload(m.change);
    // A sandbox's sections (policies, the names its forms offer) refresh themselves on this.
    document.body.dispatchEvent(new CustomEvent("lab:topology"));
  }

  // A sandbox's workload was added or removed (exercises/lab_controls.py): its card comes
  // from the server, or goes.
  function onSandboxWorkload({ action, item: name }) {
    const card = document.getElementById(`workload-${name}`);
    if (action === "delete") {
      card?.remove();
      delete state.workloads[name];
      return;
    }
    const box = $("sandbox-new-workloads");
    if (card || !box || !window.htmx) return;
    const url = box.dataset.cardUrl.replace("__name__", encodeURIComponent(name));
    window.htmx.ajax("GET", url, { target: box, swap: "beforeend" });
  }

  // ------------------------------------------------------------------ start
  renderGraph(graph);
  if (location.hash === "#presenter") setPresenting(true);
  updateSteps(false);
  renderLog();
  if (!isOver(state.labState)) {
    setConnection("connecting");
    connectNow();
  } else if (config.snapshot) {
    onSnapshot(config.snapshot); // what the lab last reported; it ends the page
  } else {
    endLab(state.labState);
  }
}
