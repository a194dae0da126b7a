// The lab diagram's layout: where each node, edge and edge label goes, from the graph
// alone (no DOM). ELK's layered algorithm (elkjs, `elk.layout()`, a Promise) does the
// work; this module says what to ask it and turns its answer into what main.js draws.
// The caller measures text: `measure.nodeWidth(node, kind)` is the width a node's name
// and numbers need, `measure.edgeLabelWidth(label)` the width of an edge's label.
import { roundedPolyline } from "./paths.js";

// Two densities: "normal", and "compact" (no detail row, tighter gaps) when the normal
// layout would have to shrink to fit the box and the compact one shrinks less. Sizes are [minimum width,
// height]; a node grows (up to maxWidth) to show its whole name. `colGap` is ELK's space
// between layers: an edge's label gets a layer of its own, so the gap between two columns
// is at least its label plus twice colGap, and ELK widens it for the edges' tracks.
export const DENSITY = {
  normal: {
    name: "normal", colGap: 12, rowGap: 16, maxWidth: 244,
    size: { producer: [158, 62], exchange: [160, 62], queue: [176, 98], consumer: [158, 62] },
  },
  compact: {
    name: "compact", colGap: 10, rowGap: 10, maxWidth: 204,
    size: { producer: [140, 44], exchange: [144, 44], queue: [160, 74], consumer: [140, 44] },
  },
};
export const KIND_COLUMN = { producer: 0, exchange: 1, queue: 2, consumer: 3 };
export const PAD = 14;
export const EDGE_LABEL_HEIGHT = 17;
// An edge's label sits at one of its ends, where it needs no layer of its own (a centre
// label does, which widened the drawing by a column per label): a publish's key by its
// producer, a binding's key by its queue; in the middle when that end has other labels.
function labelPlacements(edges) {
  const at = new Map();
  const end = (e) => (e.kind === "publish" ? `t:${e.source}` : `h:${e.target}`);
  for (const e of edges) if (e.label) at.set(end(e), (at.get(end(e)) || 0) + 1);
  return (e) => (at.get(end(e)) > 1 ? "CENTER" : e.kind === "publish" ? "TAIL" : "HEAD");
}
const CORNER_RADIUS = 9;

// Columns by kind, left to right: producers, exchanges, queues, consumers. An exchange's
// column is one right of the exchanges that route to it (bindings and alternate
// exchanges, the longest such chain; bounded, so a cycle of bindings cannot loop
// forever). ELK keeps these as partitions: each column's nodes in layers of their own.
export function columns(g) {
  const kindOf = (n) => (KIND_COLUMN[n.kind] != null ? n.kind : "queue");
  const exchanges = g.nodes.filter((n) => kindOf(n) === "exchange").map((n) => n.id);
  const depth = new Map(exchanges.map((id) => [id, 0]));
  const exEdges = g.edges.filter((e) => e.kind !== "dead-letter" && depth.has(e.source) && depth.has(e.target) && e.source !== e.target);
  for (let round = 0; round < exchanges.length; round++) {
    let changed = false;
    for (const e of exEdges) {
      const d = depth.get(e.source) + 1;
      if (d > depth.get(e.target) && d < exchanges.length) {
        depth.set(e.target, d);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const maxDepth = Math.max(0, ...depth.values());
  const column = new Map();
  for (const n of g.nodes) {
    const kind = kindOf(n);
    column.set(n.id, kind === "exchange" ? 1 + depth.get(n.id) : kind === "producer" ? 0 : KIND_COLUMN[kind] + maxDepth);
  }
  return column;
}

// The graph as ELK takes it (https://eclipse.dev/elk/reference/algorithms/org-eclipse-elk-layered.html).
export function elkGraph(g, density, measure) {
  const column = columns(g);
  const ids = new Set(g.nodes.map((n) => n.id));
  const spacing = String(Math.max(10, density.rowGap));
  const edges = g.edges.filter((e) => ids.has(e.source) && ids.has(e.target));
  const labelPlacement = labelPlacements(edges);
  return {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "RIGHT",
      "elk.edgeRouting": "ORTHOGONAL",
      "elk.padding": "[top=0,left=0,bottom=0,right=0]",
      "elk.partitioning.activate": "true",
      "elk.layered.spacing.nodeNodeBetweenLayers": String(density.colGap),
      "elk.spacing.nodeNode": String(density.rowGap),
      "elk.spacing.edgeNode": spacing,
      "elk.spacing.edgeEdge": "10",
      "elk.layered.spacing.edgeNodeBetweenLayers": "4",
      "elk.layered.spacing.edgeEdgeBetweenLayers": "10",
      "elk.spacing.edgeLabel": "3",
      "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
      "elk.layered.nodePlacement.strategy": "NETWORK_SIMPLEX",
      "elk.layered.crossingMinimization.semiInteractive": "false",
    },
    children: g.nodes.map((n) => {
      const kind = KIND_COLUMN[n.kind] != null ? n.kind : "queue";
      const [minW, h] = density.size[kind];
      const w = Math.max(minW, Math.min(density.maxWidth, Math.ceil(measure.nodeWidth(n, kind))));
      return { id: n.id, width: w, height: h, layoutOptions: { "elk.partitioning.partition": String(column.get(n.id)) } };
    }),
    edges: edges.map((e) => ({
        id: e.id,
        sources: [e.source],
        targets: [e.target],
        labels: e.label ? [{ id: `label:${e.id}`, text: e.label, width: Math.ceil(measure.edgeLabelWidth(e.label)), height: EDGE_LABEL_HEIGHT, layoutOptions: { "elk.edgeLabels.placement": labelPlacement(e) } }] : [],
      })),
  };
}

// ELK's answer as main.js draws it: nodes (id -> {id, kind, data, x, y, w, h}), the
// edges, each edge's path (`routes`: SVG path data; `points`: its corners), each label's
// box, and the box around everything.
export function fromElk(result, g, density) {
  const byId = new Map(g.nodes.map((n) => [n.id, n]));
  const nodes = new Map();
  for (const c of result.children) {
    const data = byId.get(c.id);
    const kind = KIND_COLUMN[data.kind] != null ? data.kind : "queue";
    nodes.set(c.id, { id: c.id, kind, data, x: c.x, y: c.y, w: c.width, h: c.height });
  }
  const edgeData = new Map(g.edges.map((e) => [e.id, e]));
  const edges = [], routes = new Map(), points = new Map(), labels = new Map();
  for (const r of result.edges) {
    const e = edgeData.get(r.id);
    edges.push(e);
    const pts = (r.sections || []).flatMap((s, i) => [...(i ? [] : [s.startPoint]), ...(s.bendPoints || []), s.endPoint]).map((p) => [p.x, p.y]);
    points.set(e.id, pts);
    routes.set(e.id, pts.length > 1 ? roundedPolyline(pts, CORNER_RADIUS) : "");
    const l = r.labels?.[0];
    if (l) labels.set(e.id, { x: l.x, y: l.y, w: l.width, h: l.height });
  }
  const boxes = [...nodes.values(), ...labels.values()];
  const xs = [...boxes.flatMap((b) => [b.x, b.x + b.w]), ...[...points.values()].flat().map((p) => p[0])];
  const ys = [...boxes.flatMap((b) => [b.y, b.y + b.h]), ...[...points.values()].flat().map((p) => p[1])];
  const box = xs.length ? { x1: Math.min(...xs), y1: Math.min(...ys), x2: Math.max(...xs), y2: Math.max(...ys) } : { x1: 0, y1: 0, x2: 0, y2: 0 };
  return { nodes, edges, routes, points, labels, box, density, size: { w: result.width, h: result.height } };
}

// Lay out graph `g` with an ELK instance (`new ELK()` of elk.bundled.js): a Promise.
export async function layoutGraph(elk, g, density, measure) {
  return fromElk(await elk.layout(elkGraph(g, density, measure)), g, density);
}
