"""Benchmarks of the live view on the running console: daphne and a Celery worker started
as the product runs them (common.start_console), real WebSocket viewers in processes of
their own (benchmarks/clients.py), and a publisher that stamps each message with the time
it was sent (header `x-sent-at`), so a viewer measures publish-to-browser latency from the
`published` events the monitor's frames carry.

Run by run.py: `python benchmarks/run.py live_latency` (or live_labs, live_viewers,
live_resources).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from urllib.parse import quote

import pika
from common import (
    BENCH_DIR,
    ROOT,
    Console,
    broker_pids,
    cpu_seconds,
    exercise,
    fmt_ms,
    lab_vhost,
    measure_cpu,
    percentile,
    rss_bytes,
    session_cookie,
    start_console,
    user,
)

from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient
from labconsole.flow.reporter import FIRST_WATCH_SECONDS, SENT_AT

CLIENTS = ROOT / "benchmarks" / "clients.py"
CLIENT_PROCESSES = 4
EXERCISE = "direct-routing"  # its exchange `sensors` routes the key `temperature`
STAMP = SENT_AT  # the header the console's producers stamp, and so does this bench's
WARMUP = 3.0  # seconds between the viewers being connected and the measured window
WINDOW = 10.0  # seconds measured
CONNECT_RATE = 20.0  # viewers opening their page each second, all client processes together


# --- a stamped publisher ------------------------------------------------------------------------


class StampedPublisher(threading.Thread):
    """Publishes `rate` messages a second to each target (parameters, exchange, routing key),
    each with the header `x-sent-at`: time.time() at the moment of publishing, in whole
    microseconds (an AMQP table holds no float that pika encodes). Counts the
    messages it published within `window` (set before the window starts)."""

    def __init__(self, targets: list[tuple[list, str, str]], rate: float):
        super().__init__(daemon=True)
        self.targets = targets
        self.rate = rate
        self.window = (float("inf"), float("inf"))
        self.in_window = 0
        self.sent = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        connections = []
        try:
            channels = []
            for params, exchange, key in self.targets:
                connection = amqp.connect(params)
                connections.append(connection)
                channels.append((connection.channel(), exchange, key))
            self.ready.set()
            body = b'{"sensor": "bench", "reading": 1, "celsius": 21}'
            t0 = time.monotonic()
            next_events = t0 + 1.0
            while not self.done.is_set():
                due = int(self.rate * (time.monotonic() - t0))
                while self.sent < due:
                    for channel, exchange, key in channels:
                        now = time.time()
                        props = pika.BasicProperties(
                            content_type="application/json",
                            app_id="bench",
                            headers={STAMP: int(now * 1_000_000)},
                        )
                        channel.basic_publish(exchange, key, body, props)
                        if self.window[0] <= now <= self.window[1]:
                            self.in_window += 1
                    self.sent += 1
                if time.monotonic() >= next_events:
                    for connection in connections:
                        connection.process_data_events(0)
                    next_events = time.monotonic() + 1.0
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.error = exc
            self.ready.set()
        finally:
            for connection in connections:
                amqp.close_quietly(connection)

    def begin(self) -> StampedPublisher:
        self.start()
        self.ready.wait(30)
        if self.error:
            raise RuntimeError(f"stamped publisher failed: {self.error!r}")
        return self

    def stop(self) -> None:
        """Stops publishing (in a `finally`: it raises nothing)."""
        self.done.set()
        self.join(10)

    def check(self) -> None:
        if self.error:
            raise RuntimeError(f"stamped publisher failed: {self.error!r}")


def lab_target(session) -> tuple[list, str, str]:
    """Where a stamped publisher publishes into a lab: as the lab's user, to `sensors` with
    the key `temperature` (exercises/catalogue/direct-routing.yaml)."""
    params = amqp.parameters(
        vhost=session.vhost,
        user=session.rabbit_user,
        password=session.rabbit_password,
        name="bench stamped publisher",
    )
    return params, "sensors", "temperature"


# --- client processes --------------------------------------------------------------------------


class Clients:
    """Client processes (benchmarks/clients.py), each given its share of the work."""

    def __init__(self, orders: list[dict]):
        self.procs = []
        for i, order in enumerate(orders):
            log = open(BENCH_DIR / f"clients-{i}.log", "ab")  # noqa: SIM115 - the child's
            proc = subprocess.Popen(
                [sys.executable, str(CLIENTS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
            log.close()
            proc.stdin.write(json.dumps({**order, "stamp": STAMP}) + "\n")
            proc.stdin.flush()
            self.procs.append(proc)

    @classmethod
    def viewers(cls, console: Console, sockets: list[tuple], processes: int) -> Clients:
        """`sockets`: (lab session, owner) per viewer; each viewer logs in a session of its own
        and connects to the web server its turn picks. Together they open CONNECT_RATE
        sockets a second."""
        shares: list[list[dict]] = [[] for _ in range(min(processes, len(sockets)))]
        for i, (session, owner) in enumerate(sockets):
            base = console.urls[i % len(console.urls)]
            shares[i % len(shares)].append(
                {
                    "url": f"{base}/ws/labs/{session.id}/",
                    "origin": base,
                    "cookie": session_cookie(owner),
                    "tag": session.id,
                }
            )
        rate = CONNECT_RATE / len(shares)
        return cls([{"mode": "ws", "sockets": share, "rate": rate} for share in shares])

    def _line(self, proc) -> dict:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process ended early; see {BENCH_DIR}/clients-*.log")
        return json.loads(line)

    def ready(self) -> list[dict]:
        return [self._line(p) for p in self.procs]

    def measure(self, start: float, end: float, console: Console | None = None) -> list[dict]:
        """Counts from `start` to `end`; with `console`, the first result also holds the CPU
        each group of the console's processes (and the broker) used meanwhile."""
        for proc in self.procs:
            proc.stdin.write(json.dumps({"start": start, "end": end}) + "\n")
            proc.stdin.flush()
        if console:
            groups = {**console.pids(), "broker": broker_pids()}
            time.sleep(max(0.0, start - time.time()))
            before = {k: cpu_seconds(v, children=k != "broker") for k, v in groups.items()}
            time.sleep(max(0.0, end - time.time()))
            cpu = {
                k: (cpu_seconds(v, children=k != "broker") - before[k]) / (end - start)
                for k, v in groups.items()
            }
        results = [self._line(p) for p in self.procs]
        if console:
            cpu["clients"] = sum(r["cpu"] for r in results) / (end - start)
            results[0]["cpu_shares"] = cpu
        for proc in self.procs:
            proc.wait(30)
        return results

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def histogram(results: list[dict], key: str) -> Counter:
    merged = Counter()
    for result in results:
        merged.update({int(ms): n for ms, n in result.get(key, {}).items()})
    return merged


def watch(
    console: Console,
    sockets: list[tuple],
    *,
    publisher: StampedPublisher | None = None,
    processes: int = CLIENT_PROCESSES,
    warmup: float = WARMUP,
    window: float = WINDOW,
) -> dict:
    """Connects the viewers, waits `warmup`, measures `window` seconds, and returns the
    figures: frames per second of each viewer, latency and frame-age histograms, failures."""
    clients = Clients.viewers(console, sockets, processes)
    try:
        ready = clients.ready()
        start = time.time() + warmup
        end = start + window
        if publisher:
            publisher.window = (start, end)
        results = clients.measure(start, end, console)
    finally:
        clients.close()
    viewers = [v for r in results for v in r["viewers"]]
    connected = [v for v in viewers if v["connected"]]
    return {
        "fps": sorted(v["frames"] / window for v in connected),
        # where frames were lost: fewer made by the monitors, or dropped by a web process
        "made": sorted(v["sent"] / window for v in connected),
        "web_dropped": sum(v["dropped"] for v in connected),
        "latency": histogram(results, "latency"),
        "age": histogram(results, "age"),
        "refused": sum(not v["connected"] for v in viewers),
        "dropped": sum(v["closed_in_window"] for v in viewers),
        "errors": Counter(v["error"] for v in viewers if v["error"]),
        "connect_seconds": max(r["seconds"] for r in ready),
        "published": publisher.in_window if publisher else 0,
        "cpu": results[0]["cpu_shares"],
    }


def fps_text(figures: dict) -> str:
    fps = figures["fps"]
    if not fps:
        return "no viewer connected"
    text = f"slowest {fps[0]:.1f}, median {statistics.median(fps):.1f}"
    if figures.get("made"):
        made = figures["made"]
        text += (
            f" (made by the monitors: slowest {made[0]:.1f}, median "
            f"{statistics.median(made):.1f}; dropped by the web: {figures['web_dropped']:,})"
        )
    return text


def latency_text(figures: dict) -> str:
    h = figures["latency"]
    return f"p50 {fmt_ms(percentile(h, 50))}, p99 {fmt_ms(percentile(h, 99))}"


def cpu_text(figures: dict) -> str:
    shares = ", ".join(
        f"{'beat' if k == 'other' else k} {v * 100:.0f}%"
        for k, v in figures["cpu"].items()
        if v is not None
    )
    return f"CPU in the window (of one core): {shares}"


def failures_text(figures: dict) -> str:
    text = (
        f"opened at {CONNECT_RATE:g}/s in {figures['connect_seconds']:.1f} s, refused "
        f"{figures['refused']}, closed by the server {figures['dropped']}"
    )
    if figures["errors"]:
        text += f" ({dict(figures['errors'].most_common(3))})"
    return text


# --- labs ------------------------------------------------------------------------------------


def start_labs(n: int, owner, *, producers: bool = True) -> list:
    from exercises.models import Workload
    from exercises.services import lab_session_start, workload_stop

    spec = exercise(EXERCISE)
    sessions = []
    for _ in range(n):
        session = lab_session_start(exercise=spec, owner=owner, enforce_quotas=False)
        sessions.append(session)
        if not producers:
            for workload in session.workloads.filter(kind=Workload.Kind.PRODUCER):
                workload_stop(workload=workload)
    return sessions


def stop_labs(sessions: list) -> None:
    from exercises.services import lab_session_stop

    for session in sessions:
        session.refresh_from_db()
        lab_session_stop(session=session)


def frames_queue(channel, sessions: list, length: int) -> str:
    """A queue of the bench's own that gets the labs' frames, the newest `length` kept."""
    amqp.declare_console_exchanges(channel)
    queue = channel.queue_declare(
        "", exclusive=True, arguments={"x-max-length": length, "x-overflow": "drop-head"}
    ).method.queue
    for session in sessions:
        amqp.bind_frames(channel, queue, session.id)
    return queue


def wait_live(sessions: list, timeout: float = 90.0) -> float:
    """Waits until every lab's monitor publishes frames; returns the seconds it took."""
    t = time.monotonic()
    connection = amqp.connect(amqp.console_parameters(name="bench probe"))
    try:
        channel = connection.channel()
        queue = frames_queue(channel, sessions, 1000)
        waiting = {session.id for session in sessions}
        for method, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=1):
            if method is not None:
                waiting.difference_update(lab for lab, _ in amqp.unpack_frames(props.headers, body))
            if not waiting:
                break
            if time.monotonic() - t > timeout:
                raise RuntimeError(f"{len(waiting)} of {len(sessions)} labs sent no frame")
        channel.cancel()
    finally:
        amqp.close_quietly(connection)
    return time.monotonic() - t


# --- 1. publish-to-browser latency, one lab --------------------------------------------------


def bare_round_trip(api: ManagementClient, rate: float, window: float = WINDOW) -> dict:
    """The bare AMQP round trip measured the same way: the same stamped publisher at the same
    rate into a plain queue, read by a pika consumer in a process of its own."""
    vhost = lab_vhost(api)
    try:
        user_name, password = amqp.console_credentials()
        params = amqp.parameters(vhost=vhost, user=user_name, password=password, name="bench")
        connection = amqp.connect(params)
        connection.channel().queue_declare("plain")
        connection.close()
        host, port = params[0].host, params[0].port
        url = (
            f"amqp://{quote(user_name, safe='')}:{quote(password, safe='')}@{host}:{port}/"
            f"{quote(vhost, safe='')}"
        )
        clients = Clients([{"mode": "amqp", "url": url, "queue": "plain"}])
        try:
            clients.ready()
            publisher = StampedPublisher([(params, "", "plain")], rate).begin()
            start = time.time() + WARMUP
            publisher.window = (start, start + window)
            try:
                (result,) = clients.measure(start, start + window)
            finally:
                publisher.stop()
            publisher.check()
        finally:
            clients.close()
    finally:
        api.delete_vhost(vhost)
    return {
        "latency": histogram([result], "latency"),
        "received": result["received"],
        "published": publisher.in_window,
    }


def bench_live_latency(api: ManagementClient, rates=(100, 1000, 5000)) -> None:
    """Publish-to-browser latency for one direct-routing lab with its own producers off and
    a stamped publisher at 100, 1,000 and 5,000 msg/s, one viewer; beside it the bare AMQP
    round trip at the same rate. A fresh lab for each rate."""
    console = start_console()
    owner = user("bench-latency")
    try:
        for rate in rates:
            (session,) = start_labs(1, owner, producers=False)
            try:
                wait_live([session])
                publisher = StampedPublisher([lab_target(session)], rate).begin()
                try:
                    figures = watch(console, [(session, owner)], publisher=publisher)
                finally:
                    publisher.stop()
                publisher.check()
            finally:
                stop_labs([session])
            console.check()
            bare = bare_round_trip(api, rate)
            print(
                f"live latency at {rate:,} msg/s (1 lab, 1 viewer): publish to browser "
                f"{latency_text(figures)} (target p99 <= 150 ms), "
                f"{sum(figures['latency'].values()):,} of {figures['published']:,} published "
                f"messages reached the browser as events; bare AMQP round trip "
                f"p50 {fmt_ms(percentile(bare['latency'], 50))}, "
                f"p99 {fmt_ms(percentile(bare['latency'], 99))} "
                f"({bare['received']:,} of {bare['published']:,}); "
                f"viewer {fps_text(figures)} frames/s, frame age p99 "
                f"{fmt_ms(percentile(figures['age'], 99))}, {failures_text(figures)}; "
                f"{cpu_text(figures)}"
            )
    finally:
        console.stop()


# --- 2. many labs, one viewer each -------------------------------------------------------------


def bench_live_labs(api: ManagementClient, counts=(10, 25, 50), rate: float = 5) -> None:
    """10, 25 and 50 labs at once (their own workloads running), one viewer each, and a
    stamped publisher at 5 msg/s per lab: frames per second per viewer and latency."""
    console = start_console()
    owner = user("bench-labs")
    try:
        for n in counts:
            sessions = start_labs(n, owner)
            try:
                took = wait_live(sessions)
                publisher = StampedPublisher([lab_target(s) for s in sessions], rate).begin()
                try:
                    figures = watch(console, [(s, owner) for s in sessions], publisher=publisher)
                finally:
                    publisher.stop()
                publisher.check()
            finally:
                stop_labs(sessions)
            console.check()
            print(
                f"live, {n} labs at once, one viewer each: frames/s per viewer "
                f"{fps_text(figures)} (target >= 15); latency {latency_text(figures)} "
                f"(target p99 <= 250 ms) over {sum(figures['latency'].values()):,} stamped "
                f"events ({rate:g} msg/s per lab); frame age p99 "
                f"{fmt_ms(percentile(figures['age'], 99))}; all labs live after {took:.1f} s; "
                f"{failures_text(figures)}; {cpu_text(figures)}"
            )
    finally:
        console.stop()


# --- 3. many viewers of one lab ----------------------------------------------------------------


def bench_live_viewers(api: ManagementClient, viewers: int = 200, rate: float = 5) -> None:
    """200 viewers of one lab (its workloads running, a stamped publisher at 5 msg/s)."""
    console = start_console()
    owner = user("bench-viewers")
    try:
        (session,) = start_labs(1, owner)
        try:
            wait_live([session])
            publisher = StampedPublisher([lab_target(session)], rate).begin()
            try:
                figures = watch(
                    console, [(session, owner)] * viewers, publisher=publisher, window=15.0
                )
            finally:
                publisher.stop()
            publisher.check()
        finally:
            stop_labs([session])
        print(
            f"live, {viewers} viewers of one lab: frames/s per viewer {fps_text(figures)} "
            f"(target: every viewer >= 15); latency {latency_text(figures)} (target p99 <= "
            f"250 ms) over {sum(figures['latency'].values()):,} stamped events; frame age p99 "
            f"{fmt_ms(percentile(figures['age'], 99))}; {failures_text(figures)} (target 0 "
            f"refused); {cpu_text(figures)}"
        )
    finally:
        console.stop()


# --- 4 and 5. CPU and memory per lab -----------------------------------------------------------


def _pct(share: float | None) -> str:
    return "n/a" if share is None else f"{share * 100:.1f}%"


def _groups(shares: dict) -> str:
    return (
        f"console {_pct(shares['console'])} (web {_pct(shares['web'])}, worker "
        f"{_pct(shares['worker'])}, beat {_pct(shares['other'])}), broker {_pct(shares['broker'])}"
    )


def bench_live_resources(
    api: ManagementClient, labs: int = 20, busy_rate: int = 50, seconds: float = 10.0
) -> None:
    """CPU of the console's processes (web, worker, beat, children included) and of the
    broker per idle lab (its workloads at 3 msg/s, nobody watching) and per busy lab (the
    temperature producer at `busy_rate` msg/s, one viewer); memory per lab. The baseline
    with no lab is taken before and after the labs and averaged: the broker is shared."""
    from exercises.models import Workload
    from exercises.services import workload_update

    console = start_console()
    owner = user("bench-resources")
    sessions: list = []
    try:
        # One lab and one viewer first, so that one-time costs (imports, the web server's
        # connection to the broker) are in the baseline, not in the figures per lab.
        warm = start_labs(1, owner)
        wait_live(warm)
        watch(console, [(warm[0], owner)], processes=1, warmup=0.5, window=1.0)
        stop_labs(warm)
        time.sleep(3)
        pids = console.pids()
        rss0 = {k: rss_bytes(v) for k, v in pids.items()}
        before = measure_cpu(console, seconds)

        sessions = start_labs(labs, owner)
        wait_live(sessions)
        # A new lab is taken as watched for its first seconds (its page is about to open):
        # idle means after that.
        time.sleep(FIRST_WATCH_SECONDS + 3)
        rss_labs = {k: rss_bytes(v) for k, v in pids.items()}
        idle = measure_cpu(console, seconds)

        for session in sessions:
            workload = session.workloads.get(kind=Workload.Kind.PRODUCER, name="temperature-sensor")
            workload_update(workload=workload, changes={"rate": busy_rate})
        clients = Clients.viewers(console, [(s, owner) for s in sessions], CLIENT_PROCESSES)
        try:
            clients.ready()
            time.sleep(3)
            busy = measure_cpu(console, seconds)
            rss_viewers = {k: rss_bytes(v) for k, v in pids.items()}
            now = time.time()
            clients.measure(now, now + 0.5)
        finally:
            clients.close()
        console.check()
        stop_labs(sessions)
        sessions = []
        time.sleep(5)
        after = measure_cpu(console, seconds)
    finally:
        stop_labs(sessions)
        console.stop()

    base = {
        k: None if before[k] is None else (before[k] + after[k]) / 2
        for k in ("console", "web", "worker", "other", "broker")
    }

    def per_lab(figures: dict, key: str) -> float | None:
        if figures[key] is None:
            return None
        return (figures[key] - base[key]) / labs

    print(
        f"CPU, {labs} idle labs (producers at 3 msg/s, nobody watching): console "
        f"{_pct(per_lab(idle, 'console'))} of a core per lab (target <= 1%), broker "
        f"{_pct(per_lab(idle, 'broker'))} per lab; in all: {_groups(idle)}; with no lab "
        f"(before, after): {_groups(before)}; {_groups(after)}; {seconds:g} s each"
    )
    print(
        f"CPU, {labs} busy labs (temperature producer at {busy_rate} msg/s, one viewer each): "
        f"console {_pct(per_lab(busy, 'console'))} of a core per lab, broker "
        f"{_pct(per_lab(busy, 'broker'))} per lab; in all: {_groups(busy)}"
    )
    mb = 1024 * 1024
    worker0, worker1 = rss0["worker"] / mb, rss_labs["worker"] / mb
    web0, web1, web2 = rss0["web"] / mb, rss_labs["web"] / mb, rss_viewers["web"] / mb
    print(
        f"memory per lab ({labs} labs): worker {(worker1 - worker0) / labs:+.2f} MB (RSS "
        f"{worker0:.0f} -> {worker1:.0f} MB), web with no viewer {(web1 - web0) / labs:+.2f} MB, "
        f"web with one viewer per lab {(web2 - web0) / labs:+.2f} MB (RSS {web0:.0f} -> "
        f"{web2:.0f} MB)"
    )


# --- 6. the load presets: what the broker and the page do under them -------------------------


def _load_summary(session, workload: str, timeout: float) -> dict:
    """The summary the lab's monitor logs when `workload`'s load has ended, read from its
    frames (`loads`: {workload: {"state": "done", ...}})."""
    connection = amqp.connect(amqp.console_parameters(name="bench load"))
    try:
        channel = connection.channel()
        queue = frames_queue(channel, [session], 100)
        deadline = time.monotonic() + timeout
        for method, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=1):
            for frame in amqp.lab_frames(session.id, props.headers, body) if method else ():
                load = (json.loads(frame).get("loads") or {}).get(workload) or {}
                if load.get("state") == "done":
                    return load
            if time.monotonic() > deadline:
                raise RuntimeError(f"no summary of {workload}'s load within {timeout:.0f} s")
    finally:
        amqp.close_quietly(connection)
    return {}


def bench_load_presets(api: ManagementClient) -> None:
    """Each load preset run from a direct-routing lab's page would run it: the producer's
    rate raised for the preset's time (exercises.services.workload_load), one viewer
    watching. Prints the monitor's summary (published, confirmed, the most each queue held,
    the highest p99 of a queue) and what the viewer saw meanwhile."""
    from exercises.services import workload_load
    from labconsole.workloads.load import LOAD_PRESETS

    console = start_console()
    owner = user("bench-load")
    producer = "temperature-sensor"
    try:
        for preset in LOAD_PRESETS.values():
            (session,) = start_labs(1, owner)
            try:
                wait_live([session])
                workload_load(workload=session.workloads.get(name=producer), preset=preset.name)
                figures = watch(console, [(session, owner)], warmup=1.0, window=preset.seconds - 2)
                summary = _load_summary(session, producer, timeout=preset.seconds + 30)
            finally:
                stop_labs([session])
            console.check()
            took = summary.get("seconds") or preset.seconds
            peak = ", ".join(f"{q} {n:,}" for q, n in summary.get("peak", {}).items()) or "none"
            print(
                f"load preset {preset.name} ({preset.rate:,.0f} msg/s for {preset.seconds:g} s) "
                f"on {producer}: published {summary.get('published', 0):,} "
                f"({summary.get('published', 0) / took:,.0f} msg/s), confirmed "
                f"{summary.get('confirmed', 0):,}, nacked {summary.get('nacked_by_broker', 0):,}; "
                f"most held by a queue: {peak}; highest queue p99 "
                f"{fmt_ms(summary.get('p99_ms'))}; the viewer meanwhile: {fps_text(figures)} "
                f"frames/s, latency {latency_text(figures)} over "
                f"{sum(figures['latency'].values()):,} events shown; {cpu_text(figures)}"
            )
    finally:
        console.stop()


BENCHMARKS = {
    "live_latency": bench_live_latency,
    "live_labs": bench_live_labs,
    "live_viewers": bench_live_viewers,
    "live_resources": bench_live_resources,
    "load_presets": bench_load_presets,
}
# Other names of the same benchmark, for running one by what it measures.
ALIASES = {"live_cpu": bench_live_resources, "live_memory": bench_live_resources}
