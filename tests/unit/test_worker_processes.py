"""Several Herald processes on one data folder (README "Performance", HERALD_WORKER_PROCESSES):
writers of every process take turns on the file's lock, so no update is lost and nobody
meets "database is locked"; a read-decide-write that lost a race decides again on what
won; threads whose first sends miss the definition cache together parse it once; and the
setting refuses what it cannot mean."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from herald.adapters.embedded.sqlite_db import SQLiteFile
from herald.adapters.embedded.sqlite_store import DefinitionCache, SQLiteStore
from herald.domain.reports import ReportDefinition
from herald.domain.states import DeliveryStatus
from herald.settings import Settings
from tests import factories

INCREMENTS = 150  # per thread, per process
THREADS = 3


def _count_up(path: str, start: multiprocessing.synchronize.Event) -> None:
    """Another process: read-modify-write one counter, as a claim reads and writes a record."""
    db = SQLiteFile(Path(path))
    start.wait(30)

    def work() -> None:
        for _ in range(INCREMENTS):
            with db.write() as conn:
                (value,) = conn.execute("SELECT n FROM counter").fetchone()
                conn.execute("UPDATE counter SET n=?", (value + 1,))

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_writers_in_several_processes_lose_no_update(tmp_path):
    path = tmp_path / "herald.db"
    db = SQLiteFile(path)
    with db.write() as conn:
        conn.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
        conn.execute("INSERT INTO counter VALUES (0)")
    spawn = multiprocessing.get_context("spawn")  # fresh interpreters, as `herald serve` starts its workers
    start = spawn.Event()
    workers = [spawn.Process(target=_count_up, args=(str(path), start)) for _ in range(3)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(120)
    assert [w.exitcode for w in workers] == [0, 0, 0]  # a "database is locked" would have raised
    counted = sqlite3.connect(path).execute("SELECT n FROM counter").fetchone()[0]
    assert counted == 3 * THREADS * INCREMENTS
    assert (tmp_path / "herald.db.lock").exists()


def test_a_read_decide_write_that_lost_the_race_decides_again_on_the_winner(tmp_path):
    store = SQLiteStore(tmp_path / "herald.db")
    store.create_deliveries([factories.delivery(DeliveryStatus.QUEUED, link_token="t" * 32)])
    seen: list[dict[str, object]] = []

    def change(d):
        seen.append(dict(d.events))
        if len(seen) == 1:  # another writer commits between this read and this write
            store.mutate_delivery(d.id, lambda other: {"events": {**other.events, "opened": "yes"}})
        return {"events": {**d.events, "downloads": {"count": 1}}}

    updated = store.mutate_delivery("d1", change)
    assert seen == [{}, {"opened": "yes"}]  # decided twice: the second time on the winner's write
    assert updated is not None and updated.events == {"opened": "yes", "downloads": {"count": 1}}
    assert store.get_delivery("d1").events == {"opened": "yes", "downloads": {"count": 1}}


def test_a_refusal_on_the_committed_state_writes_nothing(tmp_path):
    store = SQLiteStore(tmp_path / "herald.db")
    store.create_deliveries([factories.delivery(DeliveryStatus.SENT, link_token="t" * 32)])
    before = store.get_delivery("d1")
    assert store.claim_delivery("d1", factories.T0, factories.T0) is None  # sent: not claimable
    assert store.get_delivery("d1") == before


def test_threads_that_miss_together_parse_a_definition_once(monkeypatch):
    definition = factories.report(recipients={"email": factories.recipients(200)})
    doc = definition.model_dump_json()
    cache = DefinitionCache()
    parses: list[int] = []
    real = ReportDefinition.model_validate_json
    gate = threading.Barrier(8)

    def counted(text, *args, **kwargs):
        parses.append(1)
        return real(text, *args, **kwargs)

    monkeypatch.setattr(ReportDefinition, "model_validate_json", counted)
    results: list[ReportDefinition] = []

    def first_send() -> None:
        gate.wait(10)
        results.append(cache.parse(doc))

    threads = [threading.Thread(target=first_send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(parses) == 1 and len(results) == 8
    assert all(r is results[0] for r in results) and results[0] == definition


@pytest.mark.parametrize("value", [0, -1, 65])
def test_worker_processes_must_be_between_1_and_64(tmp_path, value):
    with pytest.raises(ValidationError, match="worker_processes must be between 1 and 64"):
        Settings(data_dir=tmp_path, worker_processes=value)
    assert Settings(data_dir=tmp_path).worker_processes == 1  # one process unless asked
