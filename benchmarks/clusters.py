"""What one machine holds of lab clusters (labconsole/cluster/local.py): 1, 2 and 3
clusters of three nodes booted at once, each with a directory, node names and ports of
the bench's own; the time until all of them run, memory and idle CPU per node, a node
killed and started again in each, and the time to take them down. docs/cluster.md.
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


BENCHMARKS = {"clusters": bench_clusters}
