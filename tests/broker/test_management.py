"""What the management client makes of the API's answers."""

from __future__ import annotations

import threading
import time

from labconsole.broker.management import ManagementClient


def test_a_list_leaves_out_items_being_deleted(api):
    """A vhost deleted while the list is made comes as `[]` in `GET /api/vhosts`: the list
    of names goes on with the others instead of failing. Vhosts are made and deleted in a
    loop beside the reads; the raw answers show the empty items are really there."""
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
    raw_empty = 0
    try:
        deadline = time.monotonic() + 60
        while raw_empty == 0 and time.monotonic() < deadline:
            raw = api.request("GET", "vhosts?columns=name")
            raw_empty += sum(1 for item in raw if not isinstance(item, dict))
            names = api.vhost_names()
            assert all(isinstance(name, str) for name in names)
            assert "/" in names
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert raw_empty, "no empty item seen in a minute of reads beside deletions"
