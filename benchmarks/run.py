"""Benchmarks: each prints its figures as a ratio to a bare baseline taken in the same run,
because the machines are shared and absolute times are noisy. Nothing is asserted.

    .venv/bin/python benchmarks/run.py               (or: make bench)
    .venv/bin/python benchmarks/run.py live_latency  (some of them, by name)

The live-view benchmarks (live.py) start the console and WebSocket viewers of their own.
Needs the local RabbitMQ with the management plugin (scripts/ensure-rabbitmq). The method
and the figures: docs/benchmarks.md.
"""

from __future__ import annotations

import multiprocessing
import os
import secrets
import statistics
import sys
import time
import uuid

import classes
import clusters
import common  # noqa: F401 - first: the bench's database and names, then Django
import live
import pika
from common import CATALOGUE, lab_vhost, median_ms, start_console

from exercises import provisioning
from exercises.spec import load_spec_file
from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient
from labconsole.flow.monitor import FIREHOSE_ACK_EVERY, FIREHOSE_PREFETCH
from labconsole.flow.reporter import FlowReporter
from labconsole.runtime.bus import ConsoleBus
from labconsole.workloads.runner import ProducerUnit

ROUNDS = 9
ALTERNATED = 5  # rounds of the alternated comparisons


def bench_provisioning(api: ManagementClient) -> None:
    """A lab's provisioning (vhost with tracing, user, permissions, limits, topology) against
    a bare definitions import of the same objects in one call."""
    spec = load_spec_file(CATALOGUE / "dlq-retries.yaml")
    ours, bare = [], []
    for _ in range(ROUNDS):
        name = f"lab-bench{secrets.token_hex(4)}"
        t = time.perf_counter()
        provisioning.provision(spec, vhost=name, user=name, password="bench")
        ours.append(time.perf_counter() - t)
        provisioning.teardown(vhost=name, user=name)

        defs = provisioning.lab_definitions(spec, vhost=name, user=name, password="bench")
        defs["vhosts"] = [{"name": name}]
        t = time.perf_counter()
        api.import_definitions(defs)
        bare.append(time.perf_counter() - t)
        provisioning.teardown(vhost=name, user=name)
    ratio = statistics.median(ours) / statistics.median(bare)
    print(
        f"provisioning: lab {median_ms(ours)}, bare definitions import {median_ms(bare)}, "
        f"ratio {ratio:.2f} (target <= 1.5), median of {ROUNDS}"
    )


def _producer_run(params, bus: ConsoleBus, **settings) -> ProducerUnit:
    """The producer workload as a worker runs it (its reports go through the bus, on the
    bus's loop): start it and join it."""
    return ProducerUnit(
        name="bench",
        bus=bus,
        control_key="bench",
        lab_params=params,
        still_current=lambda: True,
        settings={"exchange": "", "routing_key": "work", "payload": '{"n": {n}}', **settings},
        reporter=FlowReporter(
            lambda key, body: bus.publish(amqp.flow_exchange(), key, body),
            session="bench",
            workload="bench",
        ),
    )


def _purge(params) -> None:
    connection = pika.BlockingConnection(params)
    connection.channel().queue_purge("work")
    connection.close()


def _bare_rate(params, n: int, confirms: bool) -> float:
    """A bare pika loop: connect, then publish n messages like the workload's (the same
    body and properties: content type, delivery mode, a uuid message id, timestamp, app
    id) to the default exchange."""
    t = time.perf_counter()
    lab = pika.BlockingConnection(params)
    channel = lab.channel()
    channel.queue_declare("work")
    if confirms:
        channel.confirm_delivery()
    for i in range(n):
        props = pika.BasicProperties(
            content_type="application/json",
            delivery_mode=1,
            message_id=uuid.uuid4().hex,
            timestamp=int(time.time()),
            app_id="bench",
        )
        channel.basic_publish("", "work", b'{"n": %d}' % i, props)
    lab.process_data_events(0)
    rate = n / (time.perf_counter() - t)
    lab.close()
    return rate


def bench_producer(api: ManagementClient, count: int = 20000) -> None:
    """The producer workload with no rate limit against a bare pika loop publishing the
    same messages to the same queue (without and with confirms); then how closely it holds
    a set rate."""
    vhost = lab_vhost(api)
    user, password = amqp.console_credentials()
    params = amqp.parameters(vhost=vhost, user=user, password=password, name="bench")
    bus = ConsoleBus()
    bus.start()
    try:
        for confirms in (False, True):
            n = count if not confirms else count // 4
            bare, ours = [], []
            for _ in range(ALTERNATED):  # alternate, so both see the same noise
                bare.append(_bare_rate(params, n, confirms))
                _purge(params)
                run = _producer_run(params, bus, rate=1e9, count=n, confirms=confirms)
                t = time.perf_counter()
                run.start(on_exit=lambda _: None)
                run.join()
                ours.append(run.progress["sent"] / (time.perf_counter() - t))
                _purge(params)
            bare_rate, our_rate = statistics.median(bare), statistics.median(ours)
            label = "with confirms" if confirms else "no confirms"
            print(
                f"producer at full speed ({label}, {n} messages): workload {our_rate:,.0f} "
                f"msg/s, bare pika loop {bare_rate:,.0f} msg/s, ratio {our_rate / bare_rate:.2f} "
                f"(target >= 0.9), median of {ALTERNATED}, alternated"
                + (
                    "; the workload keeps up to 1,000 confirms in flight, the bare loop waits "
                    "for each"
                    if confirms
                    else ""
                )
            )
        for rate, seconds in ((1, 5), (100, 3), (1000, 3), (5000, 3), (10000, 3)):
            run = _producer_run(params, bus, rate=rate, duration=seconds)
            t = time.perf_counter()
            run.start(on_exit=lambda _: None)
            run.join()
            sent = run.progress["sent"]
            achieved = sent / (time.perf_counter() - t)
            _purge(params)
            print(
                f"producer at {rate:,} msg/s for {seconds} s: {sent:,} sent, "
                f"{achieved:,.1f} msg/s, {achieved / rate:.3f} of the set rate"
            )
    finally:
        bus.stop()
        api.delete_vhost(vhost)


def _read_firehose(vhost: str, ready, stop) -> None:
    """Reads a lab's firehose queue as the lab's monitor does (labconsole/flow/monitor.py):
    the queue declared and bound with the console's own names and arguments, the same
    prefetch, acknowledged in batches. Run in a process of its own, as the monitor is."""
    user, password = amqp.console_credentials()
    params = amqp.parameters(vhost=vhost, user=user, password=password, name="bench reader")
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    queue = amqp.firehose_queue()
    channel.queue_declare(queue, durable=True, arguments=amqp.FIREHOSE_ARGUMENTS)
    for pattern in amqp.FIREHOSE_PATTERNS:
        channel.queue_bind(queue, "amq.rabbitmq.trace", pattern)
    channel.basic_qos(prefetch_count=FIREHOSE_PREFETCH)

    def read(channel, method, _props, _body) -> None:
        if method.delivery_tag % FIREHOSE_ACK_EVERY == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)

    channel.basic_consume(queue, read)
    ready.set()
    while not stop.is_set():
        connection.process_data_events(time_limit=0.1)
    connection.close()


def _firehose_rate(api: ManagementClient, tracing: bool, n: int) -> float:
    """A bare publisher with confirms, in a fresh vhost with tracing on (the firehose read
    as the lab's monitor reads it) or off."""
    vhost = lab_vhost(api, tracing=tracing)
    user, password = amqp.console_credentials()
    params = amqp.parameters(vhost=vhost, user=user, password=password, name="bench")
    conn = pika.BlockingConnection(params)
    reader = None
    try:
        ch = conn.channel()
        ch.queue_declare("work")
        if tracing:
            ready, stop = multiprocessing.Event(), multiprocessing.Event()
            reader = multiprocessing.Process(target=_read_firehose, args=(vhost, ready, stop))
            reader.start()
            if not ready.wait(10):
                raise RuntimeError("the firehose reader did not start")
        return _confirmed_rate(ch, "", "work", n)
    finally:
        conn.close()
        if reader:
            stop.set()
            reader.join(10)
        api.delete_vhost(vhost)


def bench_firehose(api: ManagementClient, count: int = 5000) -> None:
    """Broker throughput for a bare publisher with the firehose on (and read) against off:
    what the live view costs the broker. Off and on alternate, median of each."""
    results: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(ALTERNATED):
        for tracing in (False, True):
            results[tracing].append(_firehose_rate(api, tracing, count))
    off, on = statistics.median(results[False]), statistics.median(results[True])
    print(
        f"broker throughput with confirms ({count} messages): firehose off {off:,.0f} msg/s, "
        f"on {on:,.0f} msg/s, ratio {on / off:.2f} (target >= 0.9), median of {ALTERNATED}, "
        "alternated"
    )


def _confirmed_rate(channel, exchange: str, key: str, n: int) -> float:
    """Messages a second of a bare publisher with confirms, as fast as it can."""
    channel.confirm_delivery()
    t = time.perf_counter()
    for _ in range(n):
        channel.basic_publish(exchange, key, b'{"n": 1}')
    return n / (time.perf_counter() - t)


def bench_lab_start(api: ManagementClient, rounds: int = 5) -> None:
    """From lab_session_start (what the Start button calls) to the first frame a viewer
    receives that counts a published message, with a real Celery worker."""
    from exercises.services import lab_session_start, lab_session_stop

    exercise = common.exercise("direct-routing")
    owner = common.user("bench")
    console = start_console(web=0, workers=1)
    viewer = amqp.connect(amqp.console_parameters(name="bench viewer"))
    try:
        channel = viewer.channel()
        amqp.declare_console_exchanges(channel)
        queue = channel.queue_declare("", exclusive=True).method.queue
        provisioned, first_frame = [], []
        for _ in range(rounds):
            t = time.perf_counter()
            session = lab_session_start(exercise=exercise, owner=owner)
            provisioned.append(time.perf_counter() - t)
            amqp.bind_frames(channel, queue, session.id)
            clusters.first_frame(channel, queue, session.id)
            first_frame.append(time.perf_counter() - t)
            amqp.bind_frames(channel, queue, session.id, unbind=True)
            lab_session_stop(session=session)
        print(
            f"lab start: provisioned and tasks sent in {median_ms(provisioned)}, first frame "
            f"with a published message after {median_ms(first_frame)} (target: about 1 s), "
            f"median of {rounds}"
        )
    finally:
        viewer.close()
        console.stop()


def bench_class_start(api: ManagementClient, labs: int = 24, threads: int = 8) -> None:
    """A class pressing Start together: `labs` labs started from `threads` threads at once
    (as several web processes would), without their workloads. How long each start took,
    how many vhosts the broker had left untraced right after their PUT (its lost update of
    the traced vhosts, mended by reading back), and whether every one traces at the end."""
    import logging
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django import db

    from exercises.services import lab_session_start, lab_session_stop

    exercise = common.exercise("direct-routing")
    owner = common.user("bench")
    mended: list[str] = []

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "was off at the broker" in record.getMessage():
                mended.append(record.getMessage())

    handler = Count()
    management_log = logging.getLogger("labconsole.broker.management")
    management_log.addHandler(handler)
    barrier = threading.Barrier(threads)

    def start(i: int):
        if i < threads:
            barrier.wait()
        t = time.perf_counter()
        try:
            return lab_session_start(
                exercise=exercise, owner=owner, run=False, enforce_quotas=False
            ), (time.perf_counter() - t)
        finally:
            db.connection.close()

    t = time.perf_counter()
    try:
        with ThreadPoolExecutor(threads) as pool:
            started = list(pool.map(start, range(labs)))
    finally:
        management_log.removeHandler(handler)
    wall = time.perf_counter() - t
    sessions = [s for s, _ in started]
    untraced = [s.vhost for s in sessions if api.traces(s.vhost) is not True]
    for session in sessions:
        lab_session_stop(session=session)
    print(
        f"class start: {labs} labs from {threads} threads in {wall:.1f} s, each "
        f"{median_ms([d for _, d in started])} median, slowest "
        f"{max(d for _, d in started) * 1000:.0f} ms; tracing lost at the broker and turned "
        f"on again for {len({m.split()[3] for m in mended})}; untraced at the end: "
        f"{len(untraced)} (target 0)"
    )


def _drain_seconds(n: int, multiplier: int) -> float:
    """Seconds from a new worker's `ready` to its n-th task done, with n tasks queued before
    it started (what a worker that replaces a killed one finds). The tasks are for labs that
    do not exist, so each returns at once: the figure is Celery's own pace."""
    import subprocess

    from exercises.tasks import run_monitor
    from labconsole.supervise import worker_command

    common.prepare_db()
    for i in range(n):
        run_monitor.apply_async(args=[f"gone{i}", 1])
    log_path = common.BENCH_DIR / f"drain-{multiplier}.log"
    command = [*worker_command(f"drain-{os.getpid()}-{multiplier}"), "--prefetch-multiplier"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [*command, str(multiplier)],
            cwd=common.ROOT,
            env=common.console_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = log_path.read_bytes()
            if ready is None and b" ready." in text:
                ready = time.monotonic()
            if text.count(b"succeeded in") >= n:
                return time.monotonic() - (ready or time.monotonic())
            time.sleep(0.05)
        raise RuntimeError(f"{n} tasks not done in 120 s; see {log_path}")
    finally:
        proc.terminate()
        proc.wait(20)


def bench_task_drain(api: ManagementClient, n: int = 60) -> None:
    """A worker started with tasks waiting: the console's prefetch against one at a time."""
    from django.conf import settings as django_settings

    ours = _drain_seconds(n, django_settings.CELERY_WORKER_PREFETCH_MULTIPLIER)
    one = _drain_seconds(n, 1)
    print(
        f"task drain: {n} queued tasks taken by a new worker in {ours:.1f} s, one at a time "
        f"{one:.1f} s (ratio {one / max(ours, 0.001):.0f}x)"
    )


BENCHMARKS = {
    "provisioning": bench_provisioning,
    "task_drain": bench_task_drain,
    "producer": bench_producer,
    "firehose": bench_firehose,
    "lab_start": bench_lab_start,
    "class_start": bench_class_start,
    **live.BENCHMARKS,
    **classes.BENCHMARKS,
    **clusters.BENCHMARKS,
}


def main() -> None:
    names = {**BENCHMARKS, **live.ALIASES}
    chosen = sys.argv[1:] or list(BENCHMARKS)
    api = ManagementClient()
    t = time.monotonic()
    done = []
    try:
        unknown = [n for n in chosen if n not in names]
        if unknown:
            sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from: {', '.join(names)}")
        print(
            f"RabbitMQ {api.request('GET', 'overview')['rabbitmq_version']}, "
            f"{os.cpu_count()} cores (nproc {len(os.sched_getaffinity(0))})"
        )
        for name in chosen:
            if names[name] not in done:  # an alias of one already run
                names[name](api)
                done.append(names[name])
    finally:
        common.cleanup(api)
    print(f"wall time {time.monotonic() - t:.0f} s")


if __name__ == "__main__":
    main()
