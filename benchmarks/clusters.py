"""What one machine holds of lab clusters (labconsole/cluster/local.py): 1, 2 and 3
clusters of three nodes booted at once, each with a directory, node names and ports of
the bench's own; the time until all of them run, memory and idle CPU per node, a node
killed and started again in each, and the time to take them down. And the pool
(exercises/cluster_pool.py): a cluster exercise's time from the learner's click to a
running lab with a warm cluster free and with none, and what the idle pool costs.
docs/cluster.md.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_PORT = 6101  # clear of the console's own cluster (5701...) and the shared broker
IDLE_SECONDS = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICKS  # utime stime cutime cstime


def _rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGESIZE") / 1e6


def _clusters(count: int, run: str) -> list:
    from labconsole.cluster.local import LocalCluster

    return [
        LocalCluster(
            ROOT / "var" / f"bench-clusters-{run}" / str(k),
            size=3,
            port=BASE_PORT + 10 * k,
            prefix=f"bench{os.getpid()}c{k}n",
        )
        for k in range(count)
    ]


def _at_once(clusters: list, what) -> float:
    """Runs `what(cluster)` for every cluster on a thread each; seconds until all are done."""
    started = time.monotonic()
    errors: list[BaseException] = []

    def run(c):
        try:
            what(c)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(c,)) for c in clusters]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.monotonic() - started


def bench_clusters(api=None, counts: tuple[int, ...] = (1, 2, 3)) -> None:
    from labconsole.cluster.local import port_open

    for count in counts:
        clusters = _clusters(count, str(count))
        busy = [n.port for c in clusters for n in c.nodes if port_open(n.port)]
        if busy:
            print(f"clusters x{count}: skipped, ports in use: {busy}")
            continue
        try:
            up = _at_once(clusters, lambda c: c.up())
            pids = [n.beam_pid() for c in clusters for n in c.nodes]
            time.sleep(2.0)  # after the boot's own work
            before = sum(_cpu_seconds(p) for p in pids)
            time.sleep(IDLE_SECONDS)
            idle = (sum(_cpu_seconds(p) for p in pids) - before) / IDLE_SECONDS
            rss = [_rss_mb(p) for p in pids]

            def kill_and_start(c) -> None:
                node = c.nodes[0]
                node.kill()
                c.up()  # starts what does not run, and waits for the three

            restart = _at_once(clusters, kill_and_start)
            down = _at_once(clusters, lambda c: c.down())
            print(
                f"clusters x{count} (3 nodes each, booted at once): all up in {up:.1f} s; "
                f"memory {sum(rss) / 1000:.2f} GB ({min(rss):.0f}-{max(rss):.0f} MB a node); "
                f"idle CPU {100 * idle:.1f}% of a core in all ({100 * idle / len(pids):.2f}% a "
                f"node); one node killed and started in each: {restart:.1f} s; "
                f"down in {down:.1f} s"
            )
        finally:
            for c in clusters:
                if c.base.exists():
                    c.down()
            shutil.rmtree(ROOT / "var" / f"bench-clusters-{count}", ignore_errors=True)


def _first_frame(channel, queue: str, session_id: str) -> None:
    """Waits for the lab's first frame that counts a published message."""
    import json

    from labconsole.broker import amqp

    channel.queue_bind(queue, amqp.flow_exchange(), f"lab.{session_id}.frame")
    for _m, _p, body in channel.consume(queue, auto_ack=True, inactivity_timeout=30):
        if body is None:
            raise RuntimeError("no frame within 30 s: is the worker running?")
        if any(c.get("published") for c in json.loads(body)["counters"].values()):
            break
    channel.cancel()
    channel.queue_unbind(queue, amqp.flow_exchange(), f"lab.{session_id}.frame")


def bench_cluster_labs(api=None, rounds: int = 2) -> None:
    """cluster-failover started as a learner starts it, with a real worker: with a warm
    cluster free, from Start lab to the first frame with a published message (the pool
    boots the next warm cluster meanwhile); with none, from Start the brokers to the same
    frame (the boot, then Start lab). Then the warm pool of one, idle: its memory and CPU."""
    import common
    from django.conf import settings

    from exercises import cluster_pool
    from exercises.services import lab_session_start, lab_session_stop
    from labconsole.broker import amqp

    pool_dir = ROOT / "var" / f"bench-pool-{os.getpid()}"
    # The pool's slots of the bench's own, in this process and in the console it starts.
    env = {
        "LAB_CLUSTER_DIR": str(pool_dir),
        "LAB_CLUSTER_PORT": str(BASE_PORT),
        "LAB_CLUSTER_PREFIX": f"bench{os.getpid()}p",
        "LAB_CLUSTER_WARM": "0",  # the beat's sweep boots nothing of its own
        "LAB_CLUSTER_MAX": "3",
    }
    os.environ.update(env)
    for name, value in env.items():
        setattr(settings, name, int(value) if value.isdigit() else value)
    exercise = common.exercise("cluster-failover")
    owner = common.user("bench")
    console = common.start_console(web=0, workers=1)
    viewer = amqp.connect(amqp.console_parameters(name="bench viewer"))
    warm, cold = [], []
    try:
        channel = viewer.channel()
        amqp.declare_console_exchanges(channel)
        queue = channel.queue_declare("", exclusive=True).method.queue
        for _ in range(rounds):
            settings.LAB_CLUSTER_WARM = 1
            cluster_pool.pool_fill(wait=True)
            t = time.perf_counter()
            session = lab_session_start(exercise=exercise, owner=owner, enforce_quotas=False)
            _first_frame(channel, queue, session.id)
            warm.append(time.perf_counter() - t)
            settings.LAB_CLUSTER_WARM = 0
            lab_session_stop(session=session)
            cluster_pool.pool_empty()

            t = time.perf_counter()
            cluster_pool.cluster_request(user=owner)
            while cluster_pool.cluster_offer(user=owner)["state"] != "ready":
                time.sleep(0.2)
            session = lab_session_start(exercise=exercise, owner=owner, enforce_quotas=False)
            _first_frame(channel, queue, session.id)
            cold.append(time.perf_counter() - t)
            lab_session_stop(session=session)
            cluster_pool.pool_empty()
        print(
            f"cluster lab, click to first frame: with a warm cluster "
            f"{', '.join(f'{x:.1f}' for x in warm)} s; with none (boot, then Start lab) "
            f"{', '.join(f'{x:.1f}' for x in cold)} s"
        )

        settings.LAB_CLUSTER_WARM = 1
        (cluster,) = cluster_pool.pool_fill(wait=True)
        pids = [n.beam_pid() for n in cluster_pool.local_cluster(cluster).nodes]
        time.sleep(5.0)  # after the boot's own work
        before = sum(_cpu_seconds(p) for p in pids)
        time.sleep(IDLE_SECONDS)
        idle = (sum(_cpu_seconds(p) for p in pids) - before) / IDLE_SECONDS
        rss = sum(_rss_mb(p) for p in pids)
        print(
            f"warm pool of one cluster, idle: memory {rss / 1000:.2f} GB, "
            f"CPU {100 * idle:.1f}% of a core"
        )
    finally:
        viewer.close()
        settings.LAB_CLUSTER_WARM = 0
        cluster_pool.pool_empty()
        console.stop()
        shutil.rmtree(pool_dir, ignore_errors=True)


BENCHMARKS = {"clusters": bench_clusters, "cluster_labs": bench_cluster_labs}
