"""The diagram's layout for any topology, and the lab page's pure modules, in Chromium.

Graphs come from `exercises.topology.lab_graph`, as the server sends them: every exercise
of the catalogue (new ones are checked by being there) and synthetic topologies with what
the catalogue may not have yet. They are laid out in one page that imports
`static/labconsole/lab/layout.js` with ELK, and the geometry is asserted here: no node
overlaps a node or an edge label, no two edges run along the same segment, and every
label lies inside the drawing. One check looks at a real lab page as drawn.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from exercises.spec import ExerciseSpec, load_spec_file
from exercises.topology import lab_graph

CATALOGUE = sorted((Path(__file__).resolve().parents[2] / "exercises" / "catalogue").glob("*.yaml"))
EPS = 0.5  # ELK's coordinates are fractional; touching is not overlapping


def _spec(slug: str, topology: dict, workloads: dict) -> ExerciseSpec:
    return ExerciseSpec.model_validate(
        {
            "version": 1,
            "slug": slug,
            "title": {"en": slug},
            "summary": {"en": slug},
            "description": {"en": slug},
            "level": "advanced",
            "minutes": 10,
            "topology": topology,
            "workloads": workloads,
            "steps": [],
        }
    )


def _exchange_chains() -> ExerciseSpec:
    """Exchange-to-exchange bindings, an alternate exchange, headers bindings with their
    arguments, several consumers on one queue."""
    return _spec(
        "exchange-chains",
        {
            "exchanges": [
                {"name": "ingress", "type": "topic", "arguments": {"alternate-exchange": "lost"}},
                {"name": "lost", "type": "fanout"},
                {"name": "regional", "type": "topic"},
                {"name": "by-format", "type": "headers"},
            ],
            "queues": [{"name": n} for n in ("eu", "us", "lost", "pdf", "csv", "audit")],
            "bindings": [
                {
                    "source": "ingress",
                    "destination": "regional",
                    "destination_type": "exchange",
                    "routing_key": "region.#",
                },
                {
                    "source": "ingress",
                    "destination": "by-format",
                    "destination_type": "exchange",
                    "routing_key": "doc.*",
                },
                {"source": "ingress", "destination": "audit", "routing_key": "#"},
                {"source": "regional", "destination": "eu", "routing_key": "region.eu.*"},
                {"source": "regional", "destination": "us", "routing_key": "region.us.*"},
                {"source": "lost", "destination": "lost"},
                {
                    "source": "by-format",
                    "destination": "pdf",
                    "arguments": {"x-match": "all", "format": "pdf", "size": "large"},
                },
                {
                    "source": "by-format",
                    "destination": "csv",
                    "arguments": {"x-match": "any", "format": "csv", "kind": "table"},
                },
            ],
        },
        {
            "producers": [
                {
                    "name": "orders",
                    "exchange": "ingress",
                    "routing_keys": ["region.eu.order", "doc.pdf"],
                },
                {"name": "stray", "exchange": "ingress", "routing_key": "nowhere"},
            ],
            "consumers": [
                {"name": "eu-1", "queue": "eu"},
                {"name": "eu-2", "queue": "eu"},
                {"name": "eu-3", "queue": "eu"},
                {"name": "us-1", "queue": "us"},
                {"name": "pdf-1", "queue": "pdf"},
                {"name": "auditor", "queue": "audit"},
            ],
        },
    )


def _dead_letter_cycles() -> ExerciseSpec:
    """Two retry loops through dead-letter exchanges, a parking lot, the default exchange."""
    queues = []
    for name in ("payments", "shipping"):
        queues.append({"name": name, "arguments": {"x-dead-letter-exchange": f"{name}.retry"}})
        queues.append(
            {
                "name": f"{name}.retry",
                "arguments": {"x-message-ttl": 2000, "x-dead-letter-exchange": name},
            }
        )
    queues.append({"name": "parking"})
    queues.append({"name": "expired", "arguments": {"x-dead-letter-exchange": ""}})
    exchanges = [
        {"name": n, "type": "direct"}
        for n in ("payments", "payments.retry", "shipping", "shipping.retry")
    ]
    exchanges.append({"name": "parking", "type": "fanout"})
    bindings = [
        {"source": q["name"], "destination": q["name"], "routing_key": "job"} for q in queues[:4]
    ]
    bindings.append({"source": "parking", "destination": "parking"})
    return _spec(
        "dead-letter-cycles",
        {"exchanges": exchanges, "queues": queues, "bindings": bindings},
        {
            "producers": [
                {"name": "shop", "exchange": "payments", "routing_key": "job"},
                {"name": "warehouse", "exchange": "shipping", "routing_key": "job"},
            ],
            "consumers": [
                {
                    "name": name,
                    "queue": name,
                    "behaviour": {
                        "fail": 1.0,
                        "on_fail": "reject",
                        "requeue": False,
                        "park_after": 3,
                        "park_exchange": "parking",
                        "park_routing_key": "parked",
                    },
                }
                for name in ("payments", "shipping")
            ],
        },
    )


def _thirty_objects() -> ExerciseSpec:
    """Thirty objects: three exchanges, fourteen queues, ten consumers, three producers."""
    queues = [f"q{i:02d}" for i in range(14)]
    return _spec(
        "thirty-objects",
        {
            "exchanges": [
                {"name": "events", "type": "topic"},
                {"name": "fan", "type": "fanout"},
                {"name": "hdr", "type": "headers"},
            ],
            "queues": [{"name": q} for q in queues],
            "bindings": [
                {"source": "events", "destination": q, "routing_key": f"event.{q}.#"}
                for q in queues[:6]
            ]
            + [{"source": "fan", "destination": q} for q in queues[6:10]]
            + [
                {"source": "hdr", "destination": q, "arguments": {"x-match": "any", "queue": q}}
                for q in queues[10:]
            ]
            + [
                {
                    "source": "events",
                    "destination": "fan",
                    "destination_type": "exchange",
                    "routing_key": "all.#",
                }
            ],
        },
        {
            "producers": [
                {"name": "p-events", "exchange": "events", "routing_key": "event.q00.x"},
                {"name": "p-fan", "exchange": "fan"},
                {"name": "p-hdr", "exchange": "hdr", "headers": {"queue": "q10"}},
            ],
            "consumers": [{"name": f"c{i}", "queue": queues[i % len(queues)]} for i in range(10)],
        },
    )


SYNTHETIC = {
    "exchange-chains": _exchange_chains,
    "dead-letter-cycles": _dead_letter_cycles,
    "thirty-objects": _thirty_objects,
}

# Lays out every graph with ELK in this page, with the page's own fonts for the widths.
LAYOUT_ALL = """async ([graphs, elkUrl]) => {
  const { layoutGraph, DENSITY } = await import("/static/labconsole/lab/layout.js");
  const ctx = document.createElement("canvas").getContext("2d");
  const width = (text, font) => { ctx.font = font; return ctx.measureText(text).width; };
  const measure = {
    nodeWidth: (n) => Math.max(
      width(n.label || n.id, "650 14px sans-serif") + 66,
      width("ready 0000 · unacked 0000", "13px sans-serif") + 20,
    ),
    edgeLabelWidth: (label) => Math.min(130, width(label, "10.5px monospace")) + 12,
  };
  const elk = new window.ELK();
  const out = {};
  for (const [name, g] of Object.entries(graphs)) {
    const out1 = {};
    for (const density of Object.values(DENSITY)) {
      const L = await layoutGraph(elk, g, density, measure);
      out1[density.name] = {
        nodes: [...L.nodes.values()].map((n) => ({ id: n.id, x: n.x, y: n.y, w: n.w, h: n.h })),
        labels: [...L.labels].map(([id, b]) => ({ id, ...b })),
        points: Object.fromEntries(L.points),
        routes: Object.fromEntries(L.routes),
        size: L.size,
      };
    }
    out[name] = out1;
  }
  return out;
}"""


def _overlap(a: dict, b: dict) -> bool:
    return (
        a["x"] + EPS < b["x"] + b["w"]
        and b["x"] + EPS < a["x"] + a["w"]
        and a["y"] + EPS < b["y"] + b["h"]
        and b["y"] + EPS < a["y"] + a["h"]
    )


def _segments(points: list) -> list[tuple[str, float, float, float]]:
    """Axis-parallel segments as (axis, fixed coordinate, from, to)."""
    out = []
    for (x1, y1), (x2, y2) in itertools.pairwise(points):
        if abs(y1 - y2) < EPS:
            out.append(("h", y1, min(x1, x2), max(x1, x2)))
        elif abs(x1 - x2) < EPS:
            out.append(("v", x1, min(y1, y2), max(y1, y2)))
        else:
            raise AssertionError(f"a slanted segment {(x1, y1)}→{(x2, y2)}: routes are orthogonal")
    return out


def _problems(name: str, layout: dict, graph: dict) -> list[str]:
    problems = []
    nodes, labels = layout["nodes"], layout["labels"]
    assert {n["id"] for n in nodes} == {n["id"] for n in graph["nodes"]}, f"{name}: nodes missing"
    labelled = {e["id"] for e in graph["edges"] if e["label"]}
    assert {b["id"] for b in labels} == labelled, f"{name}: labels missing"
    for a, b in itertools.combinations(nodes, 2):
        if _overlap(a, b):
            problems.append(f"{name}: node {a['id']} overlaps node {b['id']}")
    for n in nodes:
        for label in labels:
            if _overlap(n, label):
                problems.append(f"{name}: node {n['id']} overlaps the label of {label['id']}")
    for a, b in itertools.combinations(labels, 2):
        if _overlap(a, b):
            problems.append(f"{name}: the labels of {a['id']} and {b['id']} overlap")
    w, h = layout["size"]["w"], layout["size"]["h"]
    for label in labels:
        if (
            label["x"] < -EPS
            or label["y"] < -EPS
            or label["x"] + label["w"] > w + EPS
            or label["y"] + label["h"] > h + EPS
        ):
            problems.append(f"{name}: the label of {label['id']} is outside the drawing")
    segments = {edge: _segments(points) for edge, points in layout["points"].items()}
    for (ea, sa), (eb, sb) in itertools.combinations(segments.items(), 2):
        for (axis_a, at_a, lo_a, hi_a), (axis_b, at_b, lo_b, hi_b) in itertools.product(sa, sb):
            if (
                axis_a == axis_b
                and abs(at_a - at_b) < EPS
                and min(hi_a, hi_b) - max(lo_a, lo_b) > 1
            ):
                problems.append(
                    f"{name}: edges {ea} and {eb} share a segment at {axis_a}={at_a:.1f}"
                )
    return problems


@pytest.fixture(scope="module")
def layout_page(browser, live_server_url):
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{live_server_url}/accounts/login/")
    page.add_script_tag(url="/static/vendor/elkjs/elk.bundled.js")
    yield page
    context.close()
    assert not errors, errors


def test_every_topology_is_laid_out_without_overlaps(layout_page):
    """Every exercise of the catalogue and the synthetic topologies (30 objects,
    dead-letter cycles, exchange-to-exchange bindings, an alternate exchange, headers
    bindings, several consumers on a queue), in both densities: no node overlaps a node or
    a label, no two edges share a segment, every label is inside the drawing."""
    graphs = {path.stem: lab_graph(load_spec_file(path)) for path in CATALOGUE}
    graphs |= {name: lab_graph(make()) for name, make in SYNTHETIC.items()}
    assert len(CATALOGUE) >= 2
    assert sum(1 for n in graphs["thirty-objects"]["nodes"] if n["id"] != "p:@you") == 30
    layouts = layout_page.evaluate(LAYOUT_ALL, [graphs, None])
    problems = []
    for name, graph in graphs.items():
        for density, layout in layouts[name].items():
            problems += _problems(f"{name} ({density})", layout, graph)
            assert all(layout["routes"][e["id"]] for e in graph["edges"]), (
                f"{name}: an edge has no path"
            )
    assert not problems, "\n".join(problems)


def test_columns_follow_the_kinds(layout_page):
    """Producers, then exchanges (one further right per exchange that routes to it), then
    queues, then consumers, whatever cycles the dead-letter edges make."""
    graph = lab_graph(_exchange_chains())
    cycles = lab_graph(_dead_letter_cycles())
    result = layout_page.evaluate(
        """async ([a, b]) => {
          const { columns } = await import("/static/labconsole/lab/layout.js");
          return [Object.fromEntries(columns(a)), Object.fromEntries(columns(b))];
        }""",
        [graph, cycles],
    )
    chains, loops = result
    assert chains["p:orders"] == 0
    assert chains["x:ingress"] == 1
    assert chains["x:regional"] == chains["x:by-format"] == chains["x:lost"] == 2
    assert chains["q:eu"] == chains["q:pdf"] == 3
    assert chains["c:eu-1"] == chains["c:eu-2"] == 4
    assert loops["x:payments"] == loops["x:payments.retry"] == 1
    assert loops["q:payments"] == loops["q:payments.retry"] == 2
    assert loops["c:payments"] == 3


def test_pure_modules(layout_page):
    """format.js and paths.js in the browser, with its own Intl and canvas."""
    result = layout_page.evaluate(
        """async () => {
          const f = await import("/static/labconsole/lab/format.js");
          const p = await import("/static/labconsole/lab/paths.js");
          const ctx = document.createElement("canvas").getContext("2d");
          const width = (text, font) => { ctx.font = font; return ctx.measureText(text).width; };
          const ru = f.numberFormats("ru"), en = f.numberFormats("en");
          const cut = f.fitText("orders.parking.long.name", "14px sans-serif", 80, width);
          return {
            ruInt: ru.fmtInt(12345.6), enInt: en.fmtInt(12345.6), none: en.fmtInt(null),
            ruRate: ru.fmtRate(2.5), enRate: en.fmtRate(2.5), bigRate: en.fmtRate(1234.4),
            ms: [en.fmtMs(0.44), ru.fmtMs(4.25), en.fmtMs(12.4), en.fmtMs(1250)],
            rel: f.fmtTime(1.5), abs: f.fmtTime(Date.UTC(2026, 0, 2, 3, 4, 5, 6) / 1000).length,
            name: f.nameOf("q:orders.retry"), defaultName: f.nameOf("x:"),
            fits: f.fitText("short", "14px sans-serif", 200, width),
            cut, cutWidth: width(cut, "14px sans-serif"),
            path: p.roundedPolyline([[0, 0], [100, 0], [100, 50]], 9),
            mid: p.pointAt([[0, 0], [10, 0], [10, 10]], 0.75),
            centre: p.centreOf({ x: 10, y: 20, w: 100, h: 40 }),
          };
        }"""
    )
    assert result["ruInt"] == "12\u00a0346"
    assert result["enInt"] == "12,346"
    assert result["none"] == "–"
    assert result["ruRate"] == "2,5"
    assert result["enRate"] == "2.5"
    assert result["bigRate"] == "1,234"
    assert result["ms"] == ["0.4", "4,3", "12", "1,250"]
    assert result["rel"] == "+1.500s"
    assert result["abs"] == len("hh:mm:ss.mmm")
    assert result["name"] == "orders.retry"
    assert result["defaultName"] == ""
    assert result["fits"] == "short"
    assert result["cut"].endswith("…") and result["cut"].startswith("orders")
    assert result["cutWidth"] <= 80
    assert result["path"] == "M0 0 L91 0 Q100 0 100 9 L100 50"
    assert result["mid"] == [10, 5]
    assert result["centre"] == {"x": 60, "y": 40}


# Boxes on the screen of the drawn nodes and labels, and of the diagram's panel.
DRAWN = """() => {
  const box = (el) => {
    const r = el.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, h: r.height };
  };
  const all = (selector, key) => [...document.querySelectorAll(selector)]
    .map((el) => ({ id: el.parentElement.dataset[key], ...box(el) }));
  return {
    panel: box(document.getElementById("diagram")),
    nodes: all("#topology .node .node-box", "node"),
    labels: all("#topology .edge-label rect", "edge"),
    edges: document.querySelectorAll("#topology .edge").length,
    density: document.getElementById("topology").dataset.density,
  };
}"""


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_lab_page_draws_the_layout(page, live_server_url, catalogue, learner, labs):
    """The lab page (its modules, ELK from our static files) draws the dead-letter loops
    with every node and label apart, and the labels inside the diagram's panel."""
    from exercises.services import lab_session_start
    from tests.browser.test_lab_page import open_lab

    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    page.wait_for_function("() => window.labConsole.layout !== null")
    page.evaluate("() => window.labConsole.drawn")
    drawn = page.evaluate(DRAWN)
    graph = page.evaluate("() => window.labConsole.graph")
    assert len(drawn["nodes"]) == len(graph["nodes"])
    assert drawn["edges"] == len(graph["edges"])
    assert len(drawn["labels"]) == sum(1 for e in graph["edges"] if e["label"])
    for a, b in itertools.combinations(drawn["nodes"] + drawn["labels"], 2):
        assert not _overlap(a, b), (a, b)
    panel = drawn["panel"]
    for label in drawn["labels"]:
        assert (
            panel["x"] - EPS <= label["x"]
            and label["x"] + label["w"] <= panel["x"] + panel["w"] + EPS
        ), label
        assert (
            panel["y"] - EPS <= label["y"]
            and label["y"] + label["h"] <= panel["y"] + panel["h"] + EPS
        ), label
