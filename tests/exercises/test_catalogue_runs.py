"""The course's exercises (beyond direct-routing and dlq-retries) played against the real
broker and a real worker. Each exercise has a reference run that passes every checkpoint
and a plausible mistake that leaves the checkpoint it concerns pending, once the test has
seen the monitor record the mistake. To keep the suite short, several labs run at once
in one test: their waits overlap. Producers are sped up with their **Rate** control, as a
learner could."""

import time

import pytest

from exercises.services import (
    lab_publish,
    lab_session_start,
    lab_step_show,
    lab_topology_change,
    workload_load,
    workload_start,
    workload_stop,
)
from exercises.services import workload_update as update
from tests.exercises.test_exercise_runs import passed, queue_seen, stays_pending
from tests.exercises.test_topology_edits import FlowTap
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def every_checkpoint(session) -> set[str]:
    return {cp.id for _, cp in session.spec.all_checkpoints()}


def workload(session, name):
    return session.workloads.get(name=name)


def publish(session, exchange, key, **kwargs):
    return lab_publish(session=session, exchange=exchange, routing_key=key, body="{}", **kwargs)


def routed(session, exchange, key) -> dict:
    """What the lab's monitor recorded for (exchange, key): queues tuple -> messages."""
    from exercises.models import LabSession

    session = LabSession.objects.get(pk=session.pk)
    state = session.monitor_state or {}
    return {
        tuple(q): n
        for e, k, q, n in (state.get("record") or {}).get("routes", [])
        if e == exchange and k == key
    }


def rates(session) -> dict:
    """The producers' rates (msg/s) as the lab's monitor last saved them."""
    from exercises.models import LabSession

    state = LabSession.objects.get(pk=session.pk).monitor_state or {}
    return (state.get("record") or {}).get("rates", {})


def show(session, step):
    lab_step_show(session=session, step=step)


def drive(*plays, timeout=90.0):
    """Plays several labs at once. A play is a generator that acts on its lab and yields
    (session, checkpoints) to wait for; it goes on when they have all passed."""
    waiting = {play: next(play, None) for play in plays}
    deadline = time.monotonic() + timeout
    while any(w is not None for w in waiting.values()):
        for play, w in waiting.items():
            if w is not None and set(w[1]) <= passed(w[0]):
                waiting[play] = next(play, None)
        pending = {
            f"{w[0].exercise.slug} ({w[0].id})": sorted(set(w[1]) - passed(w[0]))
            for w in waiting.values()
            if w is not None
        }
        assert time.monotonic() < deadline, f"checkpoints still pending: {pending}"
        time.sleep(0.25)


def counter(session, name, what) -> int:
    """A workload's counter (or the page's, `@you`) as the lab's monitor recorded it."""
    from exercises.models import LabSession

    state = LabSession.objects.get(pk=session.pk).monitor_state or {}
    return (state.get("record") or {}).get("workloads", {}).get(name, {}).get(what, 0)


def watching(session, predicate, message):
    """Waits until predicate(queues) holds of the queues' numbers in the latest frame of
    the lab's monitor."""
    tap = FlowTap(session.id)
    try:
        wait_for(lambda: predicate(lambda q: queue_seen(tap, q)), message=message)
    finally:
        tap.close()


# --- hello-world, fanout-pubsub, topic-routing -----------------------------------------------


def play_hello(s, *, mistake=False):
    update(workload=workload(s, "sender"), changes={"rate": 5})
    yield s, ("hello-routed", "hello-acked")
    show(s, "queue-waits")
    workload_stop(workload=workload(s, "receiver"))
    yield s, ("receiver-stopped", "hello-backlog")
    show(s, "publish-yourself")
    publish(s, "", "hello")
    workload_start(workload=workload(s, "receiver"))
    yield s, ("you-published-hello", "receiver-running", "hello-drained")
    show(s, "no-such-queue")
    if mistake:
        # The queue's real name, not a typo: routed, so nothing is dropped.
        publish(s, "", "hello")
        return
    publish(s, "", "helo")
    yield s, ("typo-dropped",)
    assert "typo-returned" not in passed(s)  # dropped silently, nothing came back
    assert not publish(s, "", "helo", mandatory=True).routed
    yield s, ("typo-dropped", "typo-returned")


def play_fanout(s, *, mistake=False):
    update(workload=workload(s, "app"), changes={"rate": 5})
    yield s, ("copied-to-both", "screen-read", "archiver-read")
    show(s, "key-ignored")
    update(workload=workload(s, "app"), changes={"routing_key": "error"})
    publish(s, "logs", "whatever")
    yield s, ("error-key-set", "error-copied-to-both")
    show(s, "slow-subscriber")
    if mistake:
        # The wrong subscriber stopped: the archive keeps up, no backlog.
        workload_stop(workload=workload(s, "screen"))
        return
    workload_stop(workload=workload(s, "archiver"))
    yield s, ("archiver-stopped", "archive-backlog", "screen-goes-on")
    show(s, "archive-catches-up")
    workload_start(workload=workload(s, "archiver"))
    yield s, ("archiver-running", "archive-drained")
    show(s, "third-subscriber")
    queue = {"name": "logs.security", "type": "classic", "durable": True, "arguments": {}}
    lab_topology_change(session=s, kind="queue", action="declare", item=queue)
    bind(s, "logs", "logs.security")
    yield s, ("security-bound",)


def play_topic(s, *, mistake=False):
    update(workload=workload(s, "telemetry"), changes={"rate": 10})
    yield s, ("temperature-caught", "pressure-dropped", "kern-critical-twice")
    show(s, "one-word")
    if mistake:
        # One word too many for sensor.temperature.*: caught by nothing.
        publish(s, "events", "sensor.temperature.garage.floor")
        return
    for key in ("sensor.temperature.garage", "sensor.temperature", "kern.disk.critical"):
        publish(s, "events", key)
    yield s, ("garage-caught", "two-words-dropped", "three-words-dropped")
    show(s, "zero-or-more")
    for key in ("device", "device.tablet.screen.critical", "disk.critical"):
        publish(s, "events", key)
    yield s, ("device-alone", "device-long", "disk-critical")
    show(s, "catch-all")
    queue = {"name": "everything", "type": "classic", "durable": True, "arguments": {}}
    lab_topology_change(session=s, kind="queue", action="declare", item=queue)
    bind(s, "events", "everything", "#")
    publish(s, "events", "sensor.pressure.kitchen")
    yield s, ("everything-bound", "you-published-pressure")


def start(catalogue, learner, *slugs):
    return [lab_session_start(exercise=catalogue[slug], owner=learner) for slug in slugs]


def test_basics_reference_runs_and_mistakes(worker, catalogue, learner, labs):
    """Each exercise played right, and once with a mistake, all at once.
    hello-world: a greeting to the queue's real name is not a typo that is dropped.
    fanout-pubsub: stopping the screen instead of the archiver leaves no archive backlog.
    topic-routing: `*` is one word: `sensor.temperature.garage.floor` is not caught."""
    slugs = ("hello-world", "fanout-pubsub", "topic-routing")
    hello, fanout, topic = start(catalogue, learner, *slugs)
    hello_x, fanout_x, topic_x = start(catalogue, learner, *slugs)
    drive(
        play_hello(hello),
        play_fanout(fanout),
        play_topic(topic),
        play_hello(hello_x, mistake=True),
        play_fanout(fanout_x, mistake=True),
        play_topic(topic_x, mistake=True),
    )
    for session in (hello, fanout, topic):
        assert passed(session) == every_checkpoint(session)
    # The monitors saw each mistake...
    wait_for(
        lambda: counter(hello_x, "@you", "published") >= 2,
        message="hello-world's monitor saw the second publish to hello",
    )
    wait_for(
        lambda: routed(topic_x, "events", "sensor.temperature.garage.floor") == {(): 1},
        message="the four-word key seen, routed nowhere",
    )
    watching(
        fanout_x,
        lambda q: (
            q("logs.screen").get("consumers") == 0 and q("logs.archive").get("consumers") == 1
        ),
        message="the screen's queue unread, the archive's read",
    )
    archived = counter(fanout_x, "archiver", "acked")
    wait_for(
        lambda: counter(fanout_x, "archiver", "acked") >= archived + 5,
        message="the archiver goes on while the screen is stopped",
    )
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(hello_x, "typo-dropped")
    assert {"garage-caught", "two-words-dropped"}.isdisjoint(passed(topic_x))
    assert {"archiver-stopped", "archive-backlog"}.isdisjoint(passed(fanout_x))


# --- work-queues -----------------------------------------------------------------------------


def play_work_queues(s, *, mistake=False):
    wait_for(
        lambda: all(counter(s, w, "delivered") for w in ("fast-worker", "slow-worker")),
        message="both workers consuming",
    )
    update(workload=workload(s, "dispatcher"), changes={"rate": 8})
    yield s, ("equal-shares", "slow-lags")
    show(s, "prefetch-one")
    for name in ("slow-worker", "fast-worker"):
        update(workload=workload(s, name), changes={"prefetch": 1})
    if mistake:
        # Auto ack as well: nothing to wait for, so prefetch no longer holds the slow
        # worker back. Once it runs so (it takes tasks faster than one in 3 s), go on.
        update(workload=workload(s, "slow-worker"), changes={"ack": "auto"})
        taken = counter(s, "slow-worker", "delivered")
        wait_for(
            lambda: counter(s, "slow-worker", "delivered") >= taken + 10,
            message="the slow worker on auto ack",
        )
    yield s, ("slow-prefetch-one", "fast-prefetch-one")
    show(s, "fair-dispatch")
    update(workload=workload(s, "dispatcher"), changes={"rate": 4})
    if mistake:
        return
    yield s, ("dispatcher-faster", "fast-takes-most")
    show(s, "worker-dies")
    workload_start(workload=workload(s, "doomed-worker"))
    yield s, ("doomed-worked", "tasks-redelivered")


# --- headers-routing -------------------------------------------------------------------------


def play_headers(s, *, mistake=False):
    for name in ("finance-pdf-reports", "finance-spreadsheets"):
        update(workload=workload(s, name), changes={"rate": 5})
    yield s, ("report-to-both", "sheet-to-any")
    show(s, "any-one-header")
    if mistake:
        # Marketing without the PDF: no header of either binding, so nothing takes it.
        publish(s, "reports", "brochure", headers={"department": "marketing"})
        return
    publish(s, "reports", "brochure", headers={"format": "pdf", "department": "marketing"})
    publish(s, "reports", "no-headers")
    yield s, ("brochure-to-any", "no-headers-dropped")
    show(s, "all-needs-every-header")
    publish(
        s, "reports", "annual", headers={"format": "pdf", "department": "finance", "year": 2024}
    )
    publish(s, "reports", "finance-memo", headers={"department": "finance"})
    yield s, ("annual-to-both", "memo-to-any")


# --- priority-queue --------------------------------------------------------------------------


def play_priority(s, *, mistake=False):
    update(workload=workload(s, "regular-users"), changes={"rate": 10})
    yield s, ("backlog-builds",)
    show(s, "vip-arrive")
    if mistake:
        # The agent takes the whole backlog into its own buffer: nothing left to overtake.
        update(workload=workload(s, "agent"), changes={"prefetch": 500})
    workload_start(workload=workload(s, "vip-users"))
    yield s, ("vip-running", "vip-published")
    show(s, "vip-overtake")
    publish(s, "", "support", priority=9)
    if not mistake:
        yield s, ("vip-first", "you-published-vip")


# --- ttl-and-limits --------------------------------------------------------------------------


def play_ttl(s, *, mistake=False):
    update(workload=workload(s, "notifier"), changes={"rate": 10})
    yield s, ("notifications-expired",)
    show(s, "phone-online")
    workload_start(workload=workload(s, "phone"))
    yield s, ("phone-running", "phone-reads")
    show(s, "message-ttl")
    if mistake:
        # No expiration: the message waits in mailbox for ever.
        publish(s, "", "mailbox")
        return
    publish(s, "", "mailbox", expiration=300)
    yield s, ("mailbox-published", "mail-expired")
    show(s, "drop-head")
    update(workload=workload(s, "ticker"), changes={"rate": 10})
    workload_start(workload=workload(s, "ticker"))
    yield s, ("prices-capped", "prices-dropped")
    show(s, "reject-publish")
    update(workload=workload(s, "shop"), changes={"rate": 10})
    workload_start(workload=workload(s, "shop"))
    yield s, ("orders-capped", "orders-refused")
    show(s, "queue-expires")
    workload_stop(workload=workload(s, "session-reader"))
    yield s, ("session-reader-stopped", "session-cache-deleted")


# --- headers-routing, priority-queue and ttl-and-limits together ------------------------------


def test_headers_priority_ttl_work_queues_reference_runs_and_mistakes(
    worker, catalogue, learner, labs
):
    """headers-routing: marketing without the PDF header is caught by neither binding.
    priority-queue: an agent with a large prefetch holds the backlog, and VIPs wait in it.
    ttl-and-limits: a message published without an expiration never expires.
    work-queues: the slow worker switched to auto ack too, which undoes fair dispatch."""
    queues, queues_x = start(catalogue, learner, "work-queues", "work-queues")
    headers, headers_x = start(catalogue, learner, "headers-routing", "headers-routing")
    prio, prio_x = start(catalogue, learner, "priority-queue", "priority-queue")
    ttl, ttl_x = start(catalogue, learner, "ttl-and-limits", "ttl-and-limits")
    drive(
        play_headers(headers),
        play_headers(headers_x, mistake=True),
        play_priority(prio),
        play_priority(prio_x, mistake=True),
        play_ttl(ttl),
        play_ttl(ttl_x, mistake=True),
        play_work_queues(queues),
        play_work_queues(queues_x, mistake=True),
    )
    for session in (headers, prio, ttl, queues):
        assert passed(session) == every_checkpoint(session)
    # The crash is counted before its thread has ended and the row says so.
    wait_for(
        lambda: not workload(queues, "doomed-worker").running,
        message="the crashed worker shown stopped",
    )
    # The monitors saw each mistake...
    wait_for(
        lambda: routed(headers_x, "reports", "brochure") == {(): 1},
        message="the marketing brochure seen, routed nowhere",
    )
    # The agent holds the backlog in its own buffer, and the queue, where priorities
    # reorder, has nothing left in it for a VIP request to overtake.
    watching(
        prio_x,
        lambda q: q("support").get("unacked", 0) >= 20 and q("support").get("ready") == 0,
        message="the agent holds 20 requests or more unacknowledged, none ready in support",
    )
    acked = counter(prio_x, "agent", "acked")
    wait_for(
        lambda: counter(prio_x, "agent", "acked") >= acked + 12,
        message="the agent answers 12 more requests",
    )
    assert counter(prio_x, "vip-users", "published") >= 5
    wait_for(
        lambda: routed(ttl_x, "", "mailbox") == {("mailbox",): 1},
        message="the message without expiration seen in mailbox",
    )
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(ttl_x, "mail-expired")
    assert "mailbox-published" in passed(ttl_x)
    assert "brochure-to-any" not in passed(headers_x)
    assert "vip-first" not in passed(prio_x)
    before = {w: counter(queues_x, w, "delivered") for w in ("fast-worker", "slow-worker")}
    wait_for(
        lambda: sum(counter(queues_x, w, "delivered") - n for w, n in before.items()) >= 30,
        message="30 more tasks delivered with the slow worker on auto ack",
    )
    assert "dispatcher-faster" in passed(queues_x)
    assert "fast-takes-most" not in passed(queues_x)


# --- unroutable-messages, exchange-to-exchange, consistent-hash, confirms-vs-transactions -----


def bind(session, source, destination, key="", *, kind="queue", action="declare"):
    """A binding made (or, with action="delete", taken away) from the page's Topology card."""
    item = {
        "source": source,
        "destination": destination,
        "destination_type": kind,
        "routing_key": key,
        "arguments": {},
    }
    lab_topology_change(session=session, kind="binding", action=action, item=item)


def play_unroutable(s, *, mistake=False):
    for name in ("billing-service", "storefront"):
        update(workload=workload(s, name), changes={"rate": 10})
    yield s, ("refunds-returned", "refunds-unroutable")
    show(s, "mandatory-from-page")
    assert publish(s, "billing", "refund").routed  # dropped, and nobody is told
    if mistake:
        # Never with mandatory: the broker drops the refund and returns nothing.
        return
    assert not publish(s, "billing", "refund", mandatory=True).routed
    yield s, ("you-got-it-back",)
    show(s, "alternate-exchange")
    bind(s, "shop.unrouted", "unrouted")
    yield s, ("alternate-bound", "gift-cards-kept")
    show(s, "caught-not-returned")
    assert publish(s, "shop", "toaster", mandatory=True).routed
    yield s, ("toaster-caught",)


def play_exchange_to_exchange(s, *, mistake=False):
    update(workload=workload(s, "app"), changes={"rate": 10})
    yield s, ("order-to-both", "user-to-users")
    show(s, "bind-audit")
    # The mistake: the order events' key, so the audit hears none of the user events.
    bind(s, "events", "audit", "order.*" if mistake else "#", kind="exchange")
    publish(s, "events", "user.login")
    if mistake:
        return
    yield s, ("audit-bound", "login-audited")
    show(s, "cut-a-branch")
    bind(s, "events", "orders", "order.*", kind="exchange", action="delete")
    publish(s, "events", "order.refunded")
    yield s, ("orders-unbound", "refund-to-audit-only")


def play_consistent_hash(s, *, mistake=False):
    update(workload=workload(s, "checkout"), changes={"rate": 40})
    bind(s, "orders", "shard-2", "1")
    yield s, ("shard-2-bound", "shard-2-gets-orders")
    show(s, "equal-weights")
    yield s, ("even-split", "customer-sticks")
    show(s, "heavier-shard")
    # The mistake: the weight 3 given to shard-1, the slower worker's queue.
    shard = "shard-1" if mistake else "shard-2"
    bind(s, "orders", shard, "1", action="delete")
    bind(s, "orders", shard, "3")
    if mistake:
        return
    yield s, ("weight-three", "weight-one-gone")
    show(s, "weighted-split")
    yield s, ("three-to-one", "customer-stays")


def play_confirms(s, *, mistake=False):
    # Slower than the 1,000 msg/s they aim at, to spare the other labs of the test: these
    # checkpoints count messages, whatever the rate.
    update(workload=workload(s, "confirming-producer"), changes={"rate": 400})
    update(workload=workload(s, "tx-producer"), changes={"rate": 500})
    workload_start(workload=workload(s, "confirming-producer"))
    yield s, ("confirms-running", "confirms-published")
    show(s, "transactions")
    if mistake == "one-at-a-time":
        # The first producer stopped before the second starts: nothing to compare with.
        workload_stop(workload=workload(s, "confirming-producer"))
    else:
        # Side by side at the rate they aim at: the confirming producer reaches it.
        update(workload=workload(s, "confirming-producer"), changes={"rate": 1000})
    workload_start(workload=workload(s, "tx-producer"))
    if mistake == "one-at-a-time":
        yield s, ("tx-running", "tx-committed")
        return
    yield s, ("tx-running", "tx-committed", "confirms-faster")
    update(workload=workload(s, "confirming-producer"), changes={"rate": 400})
    show(s, "batch-commits")
    if mistake:
        # 100 typed in Rate instead of Commit every: still one commit per message.
        update(workload=workload(s, "tx-producer"), changes={"rate": 100})
        workload_stop(workload=workload(s, "confirming-producer"))
        return
    update(workload=workload(s, "tx-producer"), changes={"tx_batch": 100})
    yield s, ("batch-of-100", "batches-committed")
    show(s, "stop-both")
    for name in ("confirming-producer", "tx-producer"):
        workload_stop(workload=workload(s, name))
    yield s, ("confirms-stopped", "tx-stopped")


def test_unroutable_exchanges_hash_confirms_reference_runs_and_mistakes(
    worker, catalogue, learner, labs
):
    """unroutable-messages: a refund published without mandatory is dropped, not returned.
    exchange-to-exchange: audit bound with order.* hears no user events.
    consistent-hash: the weight 3 given to shard-1 instead of shard-2.
    confirms-vs-transactions: 100 typed as the rate instead of the commit batch; and the
    confirming producer stopped before the transactional one starts, so that the two are
    never compared side by side."""
    slugs = ("unroutable-messages", "exchange-to-exchange", "consistent-hash")
    unroutable, e2e, chash = start(catalogue, learner, *slugs)
    unroutable_x, e2e_x, chash_x = start(catalogue, learner, *slugs)
    confirms, confirms_x, confirms_y = start(catalogue, learner, *["confirms-vs-transactions"] * 3)
    drive(
        play_unroutable(unroutable),
        play_unroutable(unroutable_x, mistake=True),
        play_exchange_to_exchange(e2e),
        play_exchange_to_exchange(e2e_x, mistake=True),
        play_consistent_hash(chash),
        play_consistent_hash(chash_x, mistake=True),
        play_confirms(confirms),
        play_confirms(confirms_x, mistake=True),
        play_confirms(confirms_y, mistake="one-at-a-time"),
    )
    for session in (unroutable, e2e, chash, confirms):
        assert passed(session) == every_checkpoint(session)
    # The monitors saw each mistake...
    wait_for(
        lambda: counter(unroutable_x, "@you", "published") >= 1,
        message="the refund published from the page without mandatory",
    )
    assert counter(unroutable_x, "@you", "returned") == 0
    wait_for(
        lambda: (
            ("audit-log", "order-analytics", "order-emails")
            in routed(e2e_x, "events", "order.created")
        ),
        message="order events reach the audit",
    )
    wait_for(
        lambda: routed(e2e_x, "events", "user.login") == {("users",): 1},
        message="the login seen, routed to users alone",
    )
    before = {w: counter(chash_x, w, "delivered") for w in ("worker-1", "worker-2")}

    def more(w):
        return counter(chash_x, w, "delivered") - before[w]

    wait_for(
        lambda: (
            more("worker-1") + more("worker-2") >= 80 and more("worker-1") > 2 * more("worker-2")
        ),
        message="shard-1 takes most orders",
    )
    committed = counter(confirms_x, "tx-producer", "committed")
    wait_for(
        lambda: counter(confirms_x, "tx-producer", "committed") >= committed + 20,
        message="the transactional producer commits on, at the rate of 100",
    )
    workload_stop(workload=workload(confirms_x, "tx-producer"))
    # The monitor's rates: the transactional producer publishing on its own.
    wait_for(
        lambda: (
            rates(confirms_y).get("tx-producer", 0) > 10
            and rates(confirms_y).get("confirming-producer", 0) < 1
        ),
        message="tx-producer publishing, confirming-producer stopped",
    )
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(unroutable_x, "you-got-it-back")
    assert {"audit-bound", "login-audited"}.isdisjoint(passed(e2e_x))
    assert {"weight-three", "weight-one-gone"}.isdisjoint(passed(chash_x))
    assert "batch-of-100" not in passed(confirms_x)
    assert stays_pending(confirms_y, "confirms-faster")


# --- rpc, quorum-poison, streams ---------------------------------------------------------------


def play_rpc(s, *, mistake=False):
    update(workload=workload(s, "client"), changes={"rate": 5})
    yield s, ("server-replied", "replies-arrived", "inbox-read")
    show(s, "server-down")
    workload_stop(workload=workload(s, "server"))
    yield s, ("server-stopped", "requests-wait")
    show(s, "late-replies")
    workload_start(workload=workload(s, "server"))
    yield s, ("server-running", "late-answers", "requests-drained")
    show(s, "no-reply-to")
    if mistake:
        # To the replies' queue instead of the server's: the server never sees it.
        publish(s, "", "rpc.replies")
        return
    publish(s, "", "rpc.requests")
    yield s, ("you-asked", "request-unanswered")


def poison(s):
    lab_publish(session=s, exchange="", routing_key="payments", body='{"card": "poison"}')


def play_quorum(s, *, mistake=False):
    update(workload=workload(s, "checkout"), changes={"rate": 5})
    yield s, ("payments-acked",)
    show(s, "poison-arrives")
    if mistake:
        # Auto ack, to stop the loop: the poison message is taken as processed, and lost.
        update(workload=workload(s, "processor"), changes={"ack": "auto"})
        wait_for(lambda: counter(s, "processor", "acked") >= 5, message="processor on auto ack")
    poison(s)
    if mistake:
        return
    yield s, ("poison-published", "poison-redelivered", "poison-dead-lettered")
    show(s, "reject-at-once")
    update(workload=workload(s, "processor"), changes={"requeue": False})
    poison(s)
    yield s, ("requeue-off", "poison-rejected")


def play_streams(s, *, mistake=False):
    update(workload=workload(s, "sensor"), changes={"rate": 10})
    yield s, ("dashboard-reads", "stream-keeps")
    # Thirty readings, most of them over a second old: history for a consumer started now.
    wait_for(lambda: counter(s, "dashboard", "acked") >= 30, message="thirty readings")
    show(s, "replay-from-first")
    if mistake:
        # `last` taken for "from the start": a reading or two of history, then live.
        workload_start(workload=workload(s, "tail"))
        return
    workload_start(workload=workload(s, "auditor"))
    yield s, ("auditor-replayed",)
    show(s, "start-from-last")
    workload_start(workload=workload(s, "tail"))
    yield s, ("tail-reads",)


def play_security(s, *, mistake=False):
    update(workload=workload(s, "order-service"), changes={"rate": 5})
    yield s, ("orders-routed",)
    show(s, "refused")
    workload_start(workload=workload(s, "audit-writer"))
    yield s, ("audit-refused",)
    show(s, "route-instead")
    workload_stop(workload=workload(s, "audit-writer"))
    if mistake:
        # One letter too many: `orders.*` matches none of the `order.created` keys.
        bind(s, "app.events", "audit.log", "orders.*")
        return
    bind(s, "app.events", "audit.log", "order.*")
    yield s, ("audit-writer-stopped", "audit-bound", "orders-audited")


def test_patterns_reference_runs_and_mistakes(worker, catalogue, learner, labs):
    """rpc: a request published to rpc.replies reaches the client, not the server, so it
    is never found unanswered.
    quorum-poison: a processor switched to auto ack swallows the poison message: nothing is
    redelivered or dead-lettered.
    streams: starting `tail` (offset last) instead of `auditor` (first) replays next to
    nothing.
    security-permissions: audit.log bound with `orders.*` catches none of the orders."""
    rpc, rpc_x = start(catalogue, learner, "rpc", "rpc")
    quorum, quorum_x = start(catalogue, learner, "quorum-poison", "quorum-poison")
    streams, streams_x = start(catalogue, learner, "streams", "streams")
    security, security_x = start(catalogue, learner, "security-permissions", "security-permissions")
    drive(
        play_rpc(rpc),
        play_rpc(rpc_x, mistake=True),
        play_quorum(quorum),
        play_quorum(quorum_x, mistake=True),
        play_streams(streams),
        play_streams(streams_x, mistake=True),
        play_security(security),
        play_security(security_x, mistake=True),
    )
    for session in (rpc, quorum, streams, security):
        assert passed(session) == every_checkpoint(session)
    # The monitors saw each mistake...
    wait_for(
        lambda: (
            routed(rpc_x, "", "rpc.replies").get(("rpc.replies",), 0) >= 1
            and counter(rpc_x, "@you", "published") == 1
        ),
        message="the request published to rpc.replies seen",
    )
    # ... and the checkpoints they concern stay pending.
    wait_for(
        lambda: (
            routed(quorum_x, "", "payments").get(("payments",), 0) >= 1
            and counter(quorum_x, "@you", "published") == 1
        ),
        message="the poison message seen in payments",
    )
    acked = counter(quorum_x, "processor", "acked")
    wait_for(
        lambda: counter(quorum_x, "processor", "acked") >= acked + 5,
        message="the processor takes five payments after it",
    )
    wait_for(lambda: counter(streams_x, "tail", "acked") >= 5, message="tail reading live")
    assert counter(streams_x, "tail", "replayed") < 10
    only_orders = routed(security_x, "app.events", "order.created").get(("app.orders",), 0)
    wait_for(
        lambda: (
            routed(security_x, "app.events", "order.created").get(("app.orders",), 0)
            >= only_orders + 5
        ),
        message="five more orders seen, routed to app.orders only",
    )
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(rpc_x, "request-unanswered")
    assert "you-asked" in passed(rpc_x)
    assert {"poison-redelivered", "poison-dead-lettered"}.isdisjoint(passed(quorum_x))
    assert "auditor-replayed" not in passed(streams_x)
    assert {"audit-bound", "orders-audited"}.isdisjoint(passed(security_x))


# --- monitoring-alerts -----------------------------------------------------------------------


def alert_state(session, name) -> str | None:
    """The alert rule's state as the lab's monitor last saved it."""
    from exercises.models import LabSession

    state = LabSession.objects.get(pk=session.pk).monitor_state or {}
    return (state.get("alerts") or {}).get(name, [None])[0]


def play_monitoring(s, *, mistake=False):
    yield s, ("orders-flow",)
    show(s, "break-consumer")
    update(workload=workload(s, "fulfilment"), changes={"fail": 1, "requeue": False})
    yield s, ("dlq-alert-fired",)
    show(s, "fix-and-drain")
    update(workload=workload(s, "fulfilment"), changes={"fail": 0})
    if mistake:
        # The cause fixed, but what it left in the DLQ left there.
        return
    workload_start(workload=workload(s, "dlq-handler"))
    yield s, ("dlq-drained", "dlq-alert-cleared")
    show(s, "lose-consumer")
    workload_stop(workload=workload(s, "fulfilment"))
    yield s, ("no-consumer-fired",)
    workload_start(workload=workload(s, "fulfilment"))
    yield s, ("no-consumer-cleared",)
    show(s, "too-much-in-flight")
    # The producer sped up so that the consumer's share piles up in seconds.
    update(workload=workload(s, "checkout"), changes={"rate": 50})
    update(workload=workload(s, "fulfilment"), changes={"processing_ms": 1000, "prefetch": 100})
    yield s, ("unacked-fired",)
    update(workload=workload(s, "fulfilment"), changes={"prefetch": 10})
    yield s, ("unacked-cleared",)


# --- microservices-saga ----------------------------------------------------------------------


def play_saga(s, *, mistake=False):
    update(workload=workload(s, "order-service"), changes={"rate": 8})
    yield s, ("paid", "shipped", "notified")
    show(s, "payments-fail")
    update(workload=workload(s, "payment-service"), changes={"fail": 0.3})
    yield s, ("compensating", "failure-lost")
    show(s, "wire-compensation")
    # `payment.*` catches the failures, and the payments that went through as well.
    bind(s, "events", "order-compensation", "payment.*" if mistake else "payment.failed")
    if mistake:
        return
    yield s, ("compensation-bound", "orders-cancelled", "customer-told")
    show(s, "service-down")
    workload_stop(workload=workload(s, "notification-service"))
    yield s, ("notifications-wait", "shipping-goes-on")
    show(s, "catch-up")
    workload_start(workload=workload(s, "notification-service"))
    yield s, ("notifier-back", "caught-up")


# --- logging-pipeline ------------------------------------------------------------------------


def play_logging(s, *, mistake=False):
    yield s, ("errors-two-copies", "info-two-copies", "on-call-reads")
    show(s, "pager-down")
    # The wrong reader stopped: analytics, whose queue only grows to its limit.
    workload_stop(workload=workload(s, "analytics" if mistake else "on-call"))
    if mistake:
        return
    yield s, ("errors-alert-fired",)
    workload_start(workload=workload(s, "on-call"))
    yield s, ("errors-alert-cleared",)
    show(s, "analytics-behind")
    update(workload=workload(s, "analytics"), changes={"processing_ms": 1000})
    yield s, ("analytics-full", "analytics-alert-fired")
    show(s, "replay-archive")
    workload_start(workload=workload(s, "replayer"))
    yield s, ("history-replayed",)


# --- final-project ---------------------------------------------------------------------------


def play_final(s, *, mistake=False):
    yield s, ("orders-done", "payments-done", "notifications-done")
    show(s, "load-test")
    if mistake:
        # The rate raised by hand instead: no load preset, so none finishes.
        update(workload=workload(s, "gateway"), changes={"rate": 300})
        return
    workload_load(workload=workload(s, "gateway"), preset="spike")
    yield s, ("load-ran", "dlq-alert")
    show(s, "handle-dead-letters")
    workload_start(workload=workload(s, "dlq-inspector"))
    yield s, ("dead-letters-read", "dlq-alert-cleared")
    show(s, "audit-trail")
    workload_start(workload=workload(s, "auditor"))
    yield s, ("audit-replayed",)


# --- the four together -----------------------------------------------------------------------


def test_monitoring_saga_logging_final_reference_runs_and_mistakes(
    worker, catalogue, learner, labs
):
    """Each of the four played right, and once with a mistake, all eight labs at once.
    monitoring-alerts: the failing consumer fixed, but the dead letters it left never
    taken: the DLQ alert keeps firing, and its `cleared` checkpoint stays pending.
    microservices-saga: the compensation bound with `payment.*`, which cancels the orders
    that were paid as well; the checkpoint on the binding's key stays pending.
    logging-pipeline: analytics stopped instead of on-call: errors are still read, the
    error alert never fires.
    final-project: the load test played with the spike preset, whose summary the monitor
    logs; the mistake raises the rate by hand, which is no load test: `load-ran` stays
    pending."""
    from exercises.models import LabSession

    monitoring, monitoring_x = start(catalogue, learner, "monitoring-alerts", "monitoring-alerts")
    saga, saga_x = start(catalogue, learner, "microservices-saga", "microservices-saga")
    logging_, logging_x = start(catalogue, learner, "logging-pipeline", "logging-pipeline")
    final, final_x = start(catalogue, learner, "final-project", "final-project")
    drive(
        play_monitoring(monitoring),
        play_monitoring(monitoring_x, mistake=True),
        play_saga(saga),
        play_saga(saga_x, mistake=True),
        play_logging(logging_),
        play_logging(logging_x, mistake=True),
        play_final(final),
        play_final(final_x, mistake=True),
        timeout=150,
    )
    for session in (monitoring, saga, logging_, final):
        assert passed(session) == every_checkpoint(session)
    # What the broker did under the load, as the monitor summed it up.
    summary = LabSession.objects.get(pk=final.pk).monitor_state["load_results"]["gateway"]
    assert summary["preset"] == "spike" and summary["rate"] == 1000
    assert summary["published"] >= 1000
    # Failed payments reached the DLQ during the spike. How many by its end depends on how
    # fast the payment worker gets through the backlog on this machine; the DLQ alert's
    # checkpoint, passed above, shows the pile past its threshold.
    assert summary["peak"].get("dead-letters", 0) > 0

    # The monitors saw each mistake: orders acknowledged again after the fix...
    acked = counter(monitoring_x, "fulfilment", "acked")
    wait_for(
        lambda: counter(monitoring_x, "fulfilment", "acked") >= acked + 10,
        message="fulfilment acknowledges orders again",
    )
    # ... paid orders routed to the compensation too, and the canceller cancelling them...
    wait_for(
        lambda: (
            routed(saga_x, "events", "payment.completed").get(("order-compensation", "shipping"), 0)
            >= 3
        ),
        message="payment.completed routed to order-compensation and shipping",
    )
    cancelled = counter(saga_x, "order-canceller", "forwarded")
    wait_for(
        lambda: counter(saga_x, "order-canceller", "forwarded") >= cancelled + 3,
        message="order-canceller cancels",
    )
    # ... on-call reading errors while analytics is stopped...
    read = counter(logging_x, "on-call", "acked")
    wait_for(
        lambda: counter(logging_x, "on-call", "acked") >= read + 3,
        message="on-call reads errors while analytics is stopped",
    )
    # ... and the gateway at the hand-raised rate.
    sent = counter(final_x, "gateway", "published")
    wait_for(
        lambda: counter(final_x, "gateway", "published") >= sent + 300,
        message="the gateway at 300 msg/s",
    )
    # The alerts the mistakes concern: still firing, never fired.
    assert alert_state(monitoring_x, "dlq-filling") == "firing"
    assert alert_state(logging_x, "errors-unread") == "ok"
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(
        (monitoring_x, "dlq-alert-cleared"),
        (saga_x, "compensation-bound"),
        (logging_x, "errors-alert-fired"),
        (final_x, "load-ran"),
    )
    assert alert_state(monitoring_x, "dlq-filling") == "firing"
