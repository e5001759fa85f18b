"""services/content.py's cache on its own: it keeps the most recently used runs up to its
size, and a store it cannot key (unhashable) is served without a cache, read every time."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from herald.services.content import ContentCache, for_store

NOW = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


class Runs:
    """A store of rendered runs, counting how often each run is read."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}

    def get_run(self, run_id: str) -> Any:
        self.reads[run_id] = self.reads.get(run_id, 0) + 1
        return SimpleNamespace(id=run_id, report_id="board-pack", artifact_key=f"reports/board-pack/{run_id}/r.pdf")

    def get_report(self, report_id: str) -> Any:
        return SimpleNamespace(definition=SimpleNamespace(id=report_id))


class UnhashableRuns(Runs):
    __hash__ = None


def test_the_cache_keeps_its_size_in_most_recently_used_runs():
    store, cache = Runs(), ContentCache(size=2)
    for run_id in ["a", "b", "a", "c"]:  # "a" used again before "c" arrives: "b" is the oldest
        assert cache.get(store, run_id, NOW).run.id == run_id
    for run_id in ["a", "c"]:
        cache.get(store, run_id, NOW)
    assert store.reads == {"a": 1, "b": 1, "c": 1}  # both kept: the size is 2, not 1
    cache.get(store, "b", NOW)
    assert store.reads["b"] == 2  # "b" was the one let go


def test_a_store_that_cannot_be_keyed_is_read_for_every_send():
    store = UnhashableRuns()
    for _ in range(3):
        content = for_store(store).get(store, "a", NOW)
        assert content is not None and content.run.id == "a"
    assert store.reads == {"a": 3}
