"""What every send of a run is built from, read once per process per run and minute.

A send needs its run's rendered part (summary, note, period, test address) and its
report's definition (name, Slack file option). The run's part is fixed once it is
rendered, and deliveries exist only after that; so a process keeps both for a minute
(``CONTENT_TTL``) instead of reading them twice per send: two Firestore reads, or two
SQLite reads and parses, per recipient (issue 14). A definition change reaches sends
within that minute, so a resend after fixing a report (say, turning ``slack_file`` off)
sends what the report says now.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from weakref import WeakKeyDictionary

from herald.domain.records import Run
from herald.domain.reports import ReportDefinition
from herald.ports.store import Store

RUNS_KEPT = 256  # runs being delivered at once, per process; older ones are read again
CONTENT_TTL = timedelta(minutes=1)


@dataclass(frozen=True)
class RunContent:
    run: Run
    report: ReportDefinition
    read_at: datetime


class ContentCache:
    """Bounded and thread-safe; only rendered runs are kept (a run not rendered yet has no
    content to share, and is read as it is). It holds no reference to the store it
    serves: the store is passed in, so a cache never keeps a store (and its connections)
    alive."""

    def __init__(self, size: int = RUNS_KEPT, ttl: timedelta = CONTENT_TTL) -> None:
        self._size = size
        self._ttl = ttl
        self._items: OrderedDict[str, RunContent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, store: Store, run_id: str, now: datetime) -> RunContent | None:
        with self._lock:
            found = self._items.get(run_id)
            if found is not None and now - found.read_at < self._ttl:
                self._items.move_to_end(run_id)
                return found
        run = store.get_run(run_id)  # outside the lock: two first sends may both read
        stored = store.get_report(run.report_id) if run is not None else None
        if run is None or stored is None:
            with self._lock:
                self._items.pop(run_id, None)
            return None
        content = RunContent(run, stored.definition, now)
        if run.artifact_key is not None:
            with self._lock:
                self._items[run_id] = content
                self._items.move_to_end(run_id)
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return content


_caches: WeakKeyDictionary[Store, ContentCache] = WeakKeyDictionary()
_caches_lock = threading.Lock()


def for_store(store: Store) -> ContentCache:
    """The cache of this store's runs: one per store object, dropped with it."""
    with _caches_lock:
        try:
            cache = _caches.get(store)
            if cache is None:
                cache = _caches[store] = ContentCache()
        except TypeError:  # a store that cannot be weakly referenced or hashed: no cache, reads as before
            return ContentCache(size=0)
        return cache
