"""The diagram's graph and the paths messages are drawn along."""

from exercises.spec import load_spec_file, validate_data
from exercises.topology import Router, lab_graph
from tests.support import ROOT


def test_dead_letter_exercise_graph():
    graph = lab_graph(load_spec_file(ROOT / "exercises/catalogue/dlq-retries.yaml"))
    kinds = {(e["source"], e["target"]): e["kind"] for e in graph["edges"]}
    assert kinds[("q:orders", "x:orders.retry")] == "dead-letter"
    assert kinds[("q:orders.retry", "x:orders")] == "dead-letter"
    assert kinds[("q:orders", "c:processor")] == "consume"
    assert kinds[("c:processor", "x:orders.parking")] == "publish"
    ids = [n["id"] for n in graph["nodes"]]
    assert len(ids) == len(set(ids))
    assert {e["source"] for e in graph["edges"]} | {e["target"] for e in graph["edges"]} <= set(ids)


def test_router_follows_exchange_to_exchange_bindings_and_builtin_exchanges():
    spec = validate_data(
        {
            "version": 1,
            "slug": "e2e",
            "title": "t",
            "summary": "s",
            "description": "d",
            "level": "beginner",
            "minutes": 5,
            "topology": {
                "exchanges": [
                    {"name": "front", "type": "fanout"},
                    {"name": "back", "type": "topic"},
                ],
                "queues": [{"name": "q"}, {"name": "all"}],
                "bindings": [
                    {"source": "front", "destination": "back", "destination_type": "exchange"},
                    {"source": "back", "destination": "q", "routing_key": "a.*"},
                    {"source": "amq.fanout", "destination": "all"},
                ],
            },
            "workloads": {"producers": [{"name": "p", "exchange": "amq.fanout"}]},
        }
    )
    graph = lab_graph(spec)
    assert "x:amq.fanout" in {n["id"] for n in graph["nodes"]}
    router = Router(graph)
    assert router.path("front", "q") == ["x:front", "x:back", "q:q"]
    assert router.path("amq.fanout", "all") == ["x:amq.fanout", "q:all"]
