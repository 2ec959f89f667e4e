"""A lease object per clip, so a redelivered duplicate does not train the same clip twice.

The lease is an optimisation, not the safety net: correctness comes from the chunk being
created exclusively (`put_if_absent`), so even two trainings of one clip cannot mix one
worker's chunk with another's state. The lease only keeps a duplicate delivery from
wasting a GPU: it expires `ttl` seconds after the holder stops renewing (a SIGKILLed
worker), after which the redelivered task takes over.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from core.jobs import LeaseRecord, read_lease
from core.storage import ObjectStore

log = logging.getLogger(__name__)


class Lease:
    def __init__(self, store: ObjectStore, key: str, holder: str, ttl: float) -> None:
        self.store, self.key, self.holder, self.ttl = store, key, holder, ttl
        self.progress: float = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        record = LeaseRecord(
            holder=self.holder, expires=time.time() + self.ttl, progress=self.progress
        )
        return record.model_dump_json().encode()

    def acquire(self) -> float | None:
        """Take the lease; None on success, else the seconds until the holder's expires."""
        for _ in range(3):
            if self.store.put_if_absent(self.key, self._body()):
                return None
            if not self.store.exists(self.key):
                continue  # released meanwhile: try to create it again
            cur = read_lease(self.store, self.key) or LeaseRecord()  # unreadable: lapsed
            remaining = cur.expires - time.time()
            if cur.holder == self.holder or remaining <= 0:
                self.store.put_bytes(self.key, self._body())
                return None
            return remaining
        return self.ttl

    def renew(self) -> None:
        self.store.put_bytes(self.key, self._body())

    def release(self) -> None:
        self.stop_heartbeat()
        cur = read_lease(self.store, self.key)
        if cur is not None and cur.holder == self.holder:
            self.store.delete(self.key)

    def start_heartbeat(self, on_tick: Callable[[], None] | None = None) -> None:
        """Renew every ttl/3 from a thread (training holds the main thread for minutes)."""

        def run() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    self.renew()
                    if on_tick:
                        on_tick()
                except Exception:  # a missed renewal is survivable; the next may work
                    log.warning("lease %s: renewal failed", self.key, exc_info=True)

        self._thread = threading.Thread(target=run, name=f"lease:{self.key}", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
