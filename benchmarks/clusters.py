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


def first_frame(channel, queue: str, session_id: str) -> None:
    """Waits for the lab's first frame (bound to `queue`) that counts a published message."""
    import json

    from labconsole.broker import amqp

    for _m, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=30):
        if body is None:
            raise RuntimeError(f"no frame of {session_id} within 30 s: is the worker running?")
        frames = [json.loads(f) for f in amqp.lab_frames(session_id, props.headers, body)]
        if any(c.get("published") for f in frames for c in f["counters"].values()):
            break
    channel.cancel()


def bench_cluster_labs(api=None, rounds: int = 2) -> None:
    """cluster-failover started as a learner starts it, with a real worker and beat. With
    the pool off (LAB_CLUSTER_WARM=0), from Start the brokers to the first frame with a
    published message (the boot, then Start lab); with a warm cluster (LAB_CLUSTER_WARM=1),
    from Start lab to that frame (the pool boots the next warm cluster meanwhile, as it
    does). Then the warm pool of one, idle: its memory and CPU."""
    import common
    from django.conf import settings

    from exercises import cluster_pool
    from exercises.models import LabCluster
    from exercises.services import lab_session_start, lab_session_stop
    from labconsole.broker import amqp

    pool_dir = ROOT / "var" / f"bench-pool-{os.getpid()}"
    # The pool's slots of the bench's own, in this process and in the consoles it starts.
    env = {
        "LAB_CLUSTER_DIR": str(pool_dir),
        "LAB_CLUSTER_PORT": str(BASE_PORT),
        "LAB_CLUSTER_PREFIX": f"bench{os.getpid()}p",
        "LAB_CLUSTER_MAX": "3",
    }
    os.environ.update(env)
    for name, value in env.items():
        setattr(settings, name, int(value) if value.isdigit() else value)
    exercise = common.exercise("cluster-failover")
    owner = common.user("bench")

    def pool_console(warm: int):
        """The console as `make run` runs it, its beat's sweep keeping `warm` warm."""
        os.environ["LAB_CLUSTER_WARM"] = str(warm)
        settings.LAB_CLUSTER_WARM = warm
        return common.start_console(web=0, workers=1)

    def click_to_frame(click) -> float:
        channel.queue_purge(queue)  # no frame of an earlier lab
        t = time.perf_counter()
        session = click()
        amqp.bind_frames(channel, queue, session.id)
        first_frame(channel, queue, session.id)
        seconds = time.perf_counter() - t
        amqp.bind_frames(channel, queue, session.id, unbind=True)
        lab_session_stop(session=session)
        return seconds

    def start_lab():
        return lab_session_start(exercise=exercise, owner=owner, enforce_quotas=False)

    def boot_then_start_lab():
        cluster_pool.cluster_request(user=owner)
        while cluster_pool.cluster_offer(user=owner)["state"] != "ready":
            time.sleep(0.2)
        return start_lab()

    def wait_for_a_warm_cluster() -> None:
        common.wait_for(
            lambda: LabCluster.objects.filter(state="warm", reserved_for=None).exists(),
            timeout=120,
            message="a warm cluster",
        )

    viewer = amqp.connect(amqp.console_parameters(name="bench viewer"))
    channel = viewer.channel()
    amqp.declare_console_exchanges(channel)
    queue = channel.queue_declare("", exclusive=True).method.queue
    console = None
    try:
        console = pool_console(0)
        cold = []
        for _ in range(rounds):
            cold.append(click_to_frame(boot_then_start_lab))
            cluster_pool.pool_empty()
        console.stop()

        console = pool_console(1)
        warm = []
        for _ in range(rounds):
            cluster_pool.pool_fill()
            wait_for_a_warm_cluster()
            warm.append(click_to_frame(start_lab))
        print(
            f"cluster lab, click to first frame with a published message: with a warm "
            f"cluster {', '.join(f'{x:.1f}' for x in warm)} s; with none (Start the "
            f"brokers, the boot, Start lab) {', '.join(f'{x:.1f}' for x in cold)} s"
        )

        common.wait_for(
            lambda: (
                LabCluster.objects.filter(state="warm").count() == 1
                and not LabCluster.objects.exclude(state="warm").exists()
            ),
            timeout=120,
            message="the pool at rest: one warm cluster",
        )
        cluster = LabCluster.objects.get()
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
        if console is not None:
            console.stop()
        settings.LAB_CLUSTER_WARM = 0
        cluster_pool.pool_empty()
        shutil.rmtree(pool_dir, ignore_errors=True)


BENCHMARKS = {"clusters": bench_clusters, "cluster_labs": bench_cluster_labs}
