"""What the management client makes of the API's answers."""

from __future__ import annotations

import threading
import time

from labconsole.broker.management import ManagementClient


class Recording(ManagementClient):
    """A client that keeps the last answer of the API as it came."""

    last = None

    def request(self, method, path, body=None, *, ok_missing=False):
        self.last = super().request(method, path, body, ok_missing=ok_missing)
        return self.last


def test_a_list_leaves_out_items_being_deleted():
    """A vhost deleted while the list is made comes as `[]` in `GET /api/vhosts`: the list
    of names goes on with the others instead of failing. Vhosts are made and deleted in a
    loop beside the reads, until one read of `vhost_names` itself had such an item."""
    stop = threading.Event()

    def churn(n: int) -> None:
        client, i = ManagementClient(), 0
        while not stop.is_set():
            name = f"lab-listing{n}-{i}"
            client.put_vhost(name)
            client.delete_vhost(name)
            i += 1

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    client = Recording()
    empty_seen = False
    try:
        deadline = time.monotonic() + 60
        while not empty_seen and time.monotonic() < deadline:
            names = client.vhost_names()
            empty_seen = any(not isinstance(item, dict) for item in client.last)
            assert all(isinstance(name, str) for name in names)
            assert "/" in names
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert empty_seen, "no empty item seen in a minute of reads beside deletions"
