"""Clients of the benchmarks, each run in a process of its own (no Django here).

    python benchmarks/clients.py      (reads its orders from standard input)

The parent writes one JSON line with what to open:

- `{"mode": "ws", "sockets": [{"url", "origin", "cookie", "tag"}], "rate": r}`:
  WebSocket viewers of lab pages opened at `r` a second (as people opening a page, not
  waiting for each other), with asyncio, each acknowledging as the page does
  (static/labconsole/lab/main.js: `{"type": "ack", "d": n}` every 10 messages, or 250 ms after
  the first unacknowledged one);
- `{"mode": "amqp", "url": amqp url, "queue": name}`: a plain AMQP consumer (pika).

The client opens everything, prints `{"ready": ...}`, waits for a line
`{"start": t0, "end": t1}` (times from time.time()), counts what arrives between the two,
and prints its results as one JSON line at t1. Latency is now - the header the orders name
as `stamp` (`x-sent-at`: the publisher's time.time() at publish, in microseconds), kept as a
histogram in whole milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections import Counter

ACK_EVERY = 10
ACK_AFTER = 0.25
STAMP = ""  # the header with the publish time: the parent's orders name it ("stamp")


class Window:
    def __init__(self):
        self.start = float("inf")
        self.end = float("inf")

    def inside(self, t: float) -> bool:
        return self.start <= t <= self.end


def emit(data: dict) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


# --- WebSocket viewers -------------------------------------------------------------------------


class Viewer:
    def __init__(self, spec: dict, window: Window, latency: Counter, age: Counter):
        self.spec = spec
        self.window = window
        self.latency = latency
        self.age = age
        self.frames = 0
        # The first and last frame of the window: their numbers (the monitor's) and the
        # socket's count of frames the web process dropped.
        self.seqs: tuple[int, int] | None = None
        self.drops: tuple[int, int] | None = None
        self.stamped = 0
        self.error: str | None = None
        self.close_code: int | None = None
        self.connected = asyncio.Event()
        self.failed = False
        self.closed_in_window = False
        self.snapshots = 0

    def result(self) -> dict:
        return {
            "tag": self.spec["tag"],
            "connected": self.connected.is_set() and not self.failed,
            "frames": self.frames,
            # frames the monitor numbered meanwhile, and those the web process dropped
            "sent": self.seqs[1] - self.seqs[0] + 1 if self.seqs else 0,
            "dropped": self.drops[1] - self.drops[0] if self.drops else 0,
            "stamped": self.stamped,
            "error": self.error,
            "close_code": self.close_code,
            "closed_in_window": self.closed_in_window,
            "snapshots": self.snapshots,
        }

    async def run(self, delay: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        ws_url = self.spec["url"].replace("http://", "ws://", 1)
        await asyncio.sleep(delay)
        try:
            # A completed handshake is an accepted socket: the server refuses a viewer (4403,
            # 4404) before accepting, and daphne drops one not accepted within 5 s.
            ws = await connect(
                ws_url,
                origin=self.spec["origin"],
                additional_headers={"Cookie": f"sessionid={self.spec['cookie']}"},
                open_timeout=30,
                ping_interval=None,  # a browser answers pings but sends none
                max_size=None,
            )
        except Exception as exc:  # noqa: BLE001 - every failure is a refused connection
            self.failed = True
            self.error = repr(exc)[:200]
            self.connected.set()
            return
        self.connected.set()
        await self.read(ws, ConnectionClosed)

    async def read(self, ws, ConnectionClosed) -> None:  # noqa: N803
        loop = asyncio.get_running_loop()
        received = acked = 0
        timer: asyncio.TimerHandle | None = None

        async def send_ack() -> None:
            nonlocal acked, timer
            if timer:
                timer.cancel()
                timer = None
            if received > acked:
                acked = received
                await ws.send(json.dumps({"type": "ack", "d": acked}))

        try:
            while True:
                remaining = self.window.end - time.time()
                if remaining <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(), min(remaining, 1.0))
                except TimeoutError:
                    continue
                now = time.time()
                message = json.loads(raw)
                if "d" in message:
                    received = message["d"]
                    if received - acked >= ACK_EVERY:
                        await send_ack()
                    elif timer is None:
                        timer = loop.call_later(
                            ACK_AFTER, lambda: asyncio.ensure_future(send_ack())
                        )
                if message.get("type") == "snapshot":
                    self.snapshots += 1
                if message.get("type") != "frame" or not self.window.inside(now):
                    continue
                self.frames += 1
                seq, dropped = message.get("seq"), message.get("dropped")
                if isinstance(seq, int):
                    self.seqs = (self.seqs[0] if self.seqs else seq, seq)
                if isinstance(dropped, int):
                    self.drops = (self.drops[0] if self.drops else dropped, dropped)
                if isinstance(message.get("t"), int | float):
                    self.age[max(0, int((now - message["t"]) * 1000))] += 1
                for event in message.get("events") or ():
                    # Only the firehose's `published` events: a consumer's `delivered` event
                    # carries the headers too, but is as late as that consumer is.
                    if event.get("kind") != "published":
                        continue
                    sent_at = (event.get("headers") or {}).get(STAMP)
                    if isinstance(sent_at, int):
                        self.stamped += 1
                        self.latency[max(0, int((now - sent_at / 1e6) * 1000))] += 1
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd else None
            self.closed_in_window = True
            self.error = f"closed by the server: {self.close_code}"
        finally:
            if timer:
                timer.cancel()
        await ws.close()


async def run_viewers(orders: dict) -> None:
    window = Window()
    latency, age = Counter(), Counter()
    interval = 1.0 / orders.get("rate", 20)
    viewers = [Viewer(spec, window, latency, age) for spec in orders["sockets"]]
    t = time.monotonic()
    tasks = [asyncio.create_task(v.run(i * interval)) for i, v in enumerate(viewers)]
    await asyncio.gather(*(v.connected.wait() for v in viewers))
    emit(
        {
            "ready": True,
            "connected": sum(not v.failed for v in viewers),
            "of": len(viewers),
            "seconds": time.monotonic() - t,
        }
    )
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    times = json.loads(line)
    window.start, window.end = times["start"], times["end"]
    await asyncio.sleep(max(0.0, window.start - time.time()))
    cpu = time.process_time()
    await asyncio.gather(*tasks)
    emit(
        {
            "cpu": time.process_time() - cpu,
            "viewers": [v.result() for v in viewers],
            "latency": latency,
            "age": age,
        }
    )


# --- a plain AMQP consumer -------------------------------------------------------------------


def run_amqp(orders: dict) -> None:
    import pika

    window = Window()
    latency = Counter()
    counts = {"received": 0, "stamped": 0}

    def on_message(channel, method, props, body) -> None:
        now = time.time()
        if not window.inside(now):
            return
        counts["received"] += 1
        sent_at = (props.headers or {}).get(STAMP)
        if isinstance(sent_at, int):
            counts["stamped"] += 1
            latency[max(0, int((now - sent_at / 1e6) * 1000))] += 1

    connection = pika.BlockingConnection(pika.URLParameters(orders["url"]))
    channel = connection.channel()
    channel.basic_consume(orders["queue"], on_message, auto_ack=True)
    emit({"ready": True})

    def read_window() -> None:
        times = json.loads(sys.stdin.readline())
        window.start, window.end = times["start"], times["end"]

    reader = threading.Thread(target=read_window, daemon=True)
    reader.start()
    while reader.is_alive() or time.time() < window.end:
        connection.process_data_events(0.05)
    connection.close()
    emit({"latency": latency, **counts})


def main() -> None:
    global STAMP
    orders = json.loads(sys.stdin.readline())
    STAMP = orders["stamp"]
    if orders["mode"] == "ws":
        asyncio.run(run_viewers(orders))
    else:
        run_amqp(orders)


if __name__ == "__main__":
    main()
