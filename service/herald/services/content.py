"""What every send of a run is built from, read once per process per run.

A send needs its run's rendered part (summary, note, period, test address) and its
report's definition (name, Slack file option). Both are fixed once the run is rendered,
and deliveries exist only after that, so a process reads them once per run instead of
twice per send: two Firestore reads, or two SQLite reads and parses, per recipient
(issue 14). One run, one definition: an edit made while a run is being delivered applies
from the next run, and every recipient of a run gets the same message.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from herald.domain.records import Run
from herald.domain.reports import ReportDefinition
from herald.ports.store import Store

RUNS_KEPT = 256  # runs being delivered at once, per process; older ones are read again


@dataclass(frozen=True)
class RunContent:
    run: Run
    report: ReportDefinition


class ContentCache:
    """Bounded and thread-safe; only rendered runs are kept (a run not rendered yet has no
    content to share, and is read as it is)."""

    def __init__(self, store: Store, size: int = RUNS_KEPT) -> None:
        self._store = store
        self._size = size
        self._items: OrderedDict[str, RunContent] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, run_id: str) -> RunContent | None:
        with self._lock:
            found = self._items.get(run_id)
            if found is not None:
                self._items.move_to_end(run_id)
                return found
        run = self._store.get_run(run_id)  # outside the lock: two first sends may both read
        stored = self._store.get_report(run.report_id) if run is not None else None
        if run is None or stored is None:
            return None
        content = RunContent(run, stored.definition)
        if run.artifact_key is not None:
            with self._lock:
                self._items[run_id] = content
                while len(self._items) > self._size:
                    self._items.popitem(last=False)
        return content


_caches: WeakKeyDictionary[Store, ContentCache] = WeakKeyDictionary()
_caches_lock = threading.Lock()


def for_store(store: Store) -> ContentCache:
    """The cache of this store's runs: one per store object, gone with it."""
    with _caches_lock:
        cache = _caches.get(store)
        if cache is None:
            cache = _caches[store] = ContentCache(store)
        return cache
