"""Never silent, never twice: Herald's own side effects and run steps as durable, claimed work.

Each test names the promise (README "Delivery guarantees") and would fail on a version
that posts alerts inline, renders without a claim, writes a run and its task apart, lets a
non-DeliveryError leave a delivery stuck, or re-sends an unknown outcome blindly.
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from datetime import timedelta

import pytest
from click.testing import CliRunner

from herald.adapters.embedded.sqlite_db import SQLiteFile, storage_error
from herald.adapters.embedded.sqlite_queue import SQLiteQueue
from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.bootstrap import build_container
from herald.cli import main
from herald.domain.errors import DeliveryError
from herald.domain.ids import heartbeat_id
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.sources import Rendered, RenderRequest
from herald.services import alerts, notifications, resend, runs
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import SEND_NOTIFICATION
from herald.settings import Settings
from herald.web.app import create_app
from tests import factories
from tests.drive import drain

OWNER = "cfo@example.com"
HC = "https://hc-ping.com/0f3e"


def token(secret: bytes) -> str:
    # The documented internal-call rule (web/auth.py), written out here rather than imported.
    return hmac.new(secret, b"herald-internal-call", hashlib.sha256).hexdigest()


class GatedSource:
    """Renders only when the test opens the gate, so racing redeliveries overlap for sure."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.renders = 0
        self._lock = threading.Lock()

    def render(self, request: RenderRequest) -> Rendered:
        with self._lock:
            self.renders += 1
        self.gate.wait(10)
        return Rendered(b"%PDF-1.4 gated", "application/pdf", "r.pdf", rows=1)


def race(n: int, call) -> tuple[list, list[threading.Thread]]:
    results: list = []
    lock = threading.Lock()

    def one() -> None:
        outcome = call()
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    return results, threads


def wait_for(predicate, what: str) -> None:
    """Bounded wait on other threads' progress (not on time)."""
    done = threading.Event()
    for _ in range(1000):
        if predicate():
            return
        done.wait(0.01)
    raise AssertionError(f"never happened: {what}")


# 2. Every run step is claimed ----------------------------------------------------------------
def test_ten_concurrent_execute_replays_render_once_and_never_answer_500(tmp_path):
    c = factories.container(tmp_path)
    source = GatedSource()
    c.source = source
    apply_definitions(c, [factories.report()])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="storm")
    client_app = create_app(c)
    headers = {"X-Herald-Internal": token(c.secret)}

    def replay():
        with client_app.test_client() as client:
            return client.post("/tasks/runs/execute", json={"run_id": run.id}, headers=headers)

    results, threads = race(10, replay)
    wait_for(lambda: len(results) == 9, "nine losers answering while the winner renders")
    assert {r.status_code for r in results} == {503} and all(r.headers["Retry-After"] for r in results)
    source.gate.set()
    for thread in threads:
        thread.join(10)
    assert source.renders == 1
    assert sorted(r.status_code for r in results) == [200] + [503] * 9
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING


def test_ten_concurrent_finish_replays_alert_once_and_ping_once(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(heartbeat_url=HC)])
    c.mailer.script["b@example.com"] = [DeliveryError("550 no such user", permanent=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c, path="/tasks/runs/execute")
    drain(c, path="/tasks/deliveries/send")
    results, threads = race(10, lambda: runs.finish_run(c, run.id))
    for thread in threads:
        thread.join(10)
    assert all(r.run is not None for r in results)
    drain(c)  # every notification task, as often as the queue has them
    assert c.store.get_run(run.id).status == RunStatus.PARTIAL
    assert len(c.mailer.sent[OWNER]) == 1
    assert [state for _, state, _ in c.heartbeat.pings].count("fail") == 1


class GatedMailer:
    """Records every message; the owner's first send waits for the test's gate."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.calls = 0

    def send(self, message):
        self.calls += 1
        self.gate.wait(10)
        return self.inner.send(message)


def test_ten_concurrent_notification_replays_post_one_message_per_channel(tmp_path):
    c = factories.container(tmp_path, alert_channels="email,slack", owner_slack_channel="C-OWNER")
    apply_definitions(c, [factories.report()])
    gated = GatedMailer(c.mailer)
    c.mailer = gated

    assert alerts.alert_owner(
        c, kind="run_failed", owner=OWNER, report_id="board-pack", run_id="r1", subject="s", body="b"
    )
    (alert,) = c.store.list_alerts()
    assert set(alert.channels) == {"email", "slack"}
    results, threads = race(10, lambda: notifications.send_notification(c, alert.id, "email"))
    wait_for(lambda: len(results) == 9, "nine losers while one sends")
    assert {r.status for r in results} == {"leased"}
    gated.gate.set()
    for thread in threads:
        thread.join(10)
    for _ in range(10):
        notifications.send_notification(c, alert.id, "slack")
    assert gated.calls == 1 and len(gated.inner.sent[OWNER]) == 1
    assert len(c.chat.posted["C-OWNER"]) == 1
    stored = c.store.get_alert(alert.id)
    assert stored.sent and {s.status for s in stored.channels.values()} == {"sent"}


def test_concurrent_ticks_start_one_run_per_slot(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])
    c.clock.advance(minutes=1)  # 07:00: the slot is due
    _, threads = race(10, lambda: tick(c))
    for thread in threads:
        thread.join(10)
    drain(c)
    assert len(c.store.list_runs().items) == 1
    assert sum(len(m) for m in c.mailer.sent.values()) == 2


# 3. No work without its task ---------------------------------------------------------------
class FailingOnce:
    """A queue that refuses its next enqueue (a full queue database, a Cloud Tasks outage)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.fail_next = True

    def enqueue(self, task):
        if self.fail_next:
            self.fail_next = False
            raise ConnectionError("queue unavailable")
        return self.inner.enqueue(task)

    def enqueue_many(self, tasks):
        return sum(self.enqueue(t) for t in tasks)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_gcp_like_a_run_written_without_its_task_is_requeued_by_the_same_request(tmp_path):
    c = factories.container(tmp_path)  # atomic is a no-op here, as on gcp
    apply_definitions(c, [factories.report()])
    recording = c.queue
    c.queue = FailingOnce(recording)
    with pytest.raises(ConnectionError):
        runs.start_manual_run(c, "board-pack", request_id="k1")
    (stranded,) = c.store.list_runs().items
    assert stranded.status == RunStatus.PENDING and recording.pending == []
    again, created = runs.start_manual_run(c, "board-pack", request_id="k1")  # the client retries
    assert not created and again.id == stranded.id
    c.queue = recording
    drain(c)
    assert c.store.get_run(stranded.id).status == RunStatus.SUCCEEDED


def test_gcp_like_the_tick_advances_a_schedule_only_once_its_run_is_queued(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(), factories.report(id="other")])
    before = c.store.get_report("board-pack").next_fire_at
    recording = c.queue
    c.queue = FailingOnce(recording)
    c.clock.advance(minutes=1)
    first = tick(c)
    assert first.failed == ["board-pack"] and len(first.started) == 1  # the other report still fired
    assert c.store.get_report("board-pack").next_fire_at == before
    second = tick(c)
    assert second.failed == [] and c.store.get_report("board-pack").next_fire_at > before
    c.queue = recording
    drain(c)
    assert {r.status for r in c.store.list_runs().items} == {RunStatus.SUCCEEDED}


def test_embedded_a_run_and_its_task_commit_together(tmp_path):
    db = SQLiteFile(tmp_path / "herald.db")
    c = factories.container(tmp_path)
    c.store = SQLiteStore(db)
    queue = SQLiteQueue(db, c.clock)
    c.queue = FailingOnce(queue)
    c.atomic = db.write
    apply_definitions(c, [factories.report()])
    with pytest.raises(ConnectionError):
        runs.start_manual_run(c, "board-pack", request_id="k1")
    assert c.store.list_runs().items == []  # rolled back with the failed enqueue: nothing stranded
    _, created = runs.start_manual_run(c, "board-pack", request_id="k1")
    assert created and queue.counts() == {"queued": 1}


def test_gcp_like_the_reconciler_requeues_a_lost_send_and_a_lost_finish(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(schedule=None)])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c, path="/tasks/runs/execute")
    assert len(c.queue.pending) == 2
    c.queue.pending.clear()  # both send tasks lost: the deliveries were written, their tasks were not
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING
    c.clock.set(factories.T0.replace(hour=7, minute=3))  # 4 minutes on, and not a reconcile minute
    assert tick(c).reconciled == 0
    c.clock.set(factories.T0.replace(hour=7, minute=5))  # 6 minutes without progress, on its period
    assert tick(c).reconciled == 2
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.SUCCEEDED
    assert sum(len(m) for m in c.mailer.sent.values()) == 2


# 4. Unexpected errors are classified, never stuck ---------------------------------------------
class RaisingMailer:
    def __init__(self, inner, bad: str) -> None:
        self.inner, self.bad, self.tries = inner, bad, 0

    def send(self, message):
        if message.to == self.bad:
            self.tries += 1
            raise ValueError("header injection: CR/LF in Subject")
        return self.inner.send(message)


def test_a_mailer_that_raises_retries_within_the_limit_then_fails_and_alerts(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])
    c.mailer = RaisingMailer(c.mailer, "a@example.com")
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    for minutes in (2, 8, 32):
        c.clock.advance(minutes=minutes)
        drain(c)
    (failed,) = c.store.list_deliveries(run_id=run.id, status=DeliveryStatus.FAILED).items
    assert c.mailer.tries == 4 and "ValueError" in failed.last_error
    assert c.store.get_run(run.id).status == RunStatus.PARTIAL
    (alert_mail,) = c.mailer.inner.sent[OWNER]
    assert "a@example.com" in alert_mail.text


def test_a_source_that_raises_retries_then_fails_the_run_with_an_alert(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])

    class Broken:
        calls = 0

        def render(self, request):
            Broken.calls += 1
            raise KeyError("bug")

    c.source = Broken()
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.RENDERING  # transient: a retry is queued
    for minutes in (2, 8, 32):
        c.clock.advance(minutes=minutes)
        drain(c)
    final = c.store.get_run(run.id)
    assert Broken.calls == 4 and final.status == RunStatus.FAILED and "KeyError" in final.error
    assert len(c.mailer.sent[OWNER]) == 1


# 5. Unknown outcomes never become duplicates ---------------------------------------------------
def test_without_the_webhook_key_an_unknown_outcome_is_never_resent(tmp_path):
    c = factories.container(tmp_path, sendgrid_api_key="SG.x")  # no HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY
    apply_definitions(c, [factories.report()])
    c.mailer.script["a@example.com"] = [DeliveryError("read timeout", permanent=False, unknown=True)]
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    for minutes in (2, 8, 32, 60):
        c.clock.advance(minutes=minutes)
        drain(c)
    (d,) = c.store.list_deliveries(run_id=run.id, recipient="a@example.com").items
    assert d.status == DeliveryStatus.UNKNOWN and len(c.mailer.attempts["a@example.com"]) == 1
    assert c.store.get_run(run.id).status == RunStatus.PARTIAL
    (alert_mail,) = c.mailer.sent[OWNER]
    assert "a@example.com" in alert_mail.text and "outcome unknown" in alert_mail.text
    offered = resend.resend_failed(c, run.id, actor="ops")
    assert offered.requested == [d.id]
    drain(c)
    assert len(c.mailer.sent["a@example.com"]) == 1  # sent only because a person asked


def test_sendgrid_without_the_webhook_key_warns_at_start(tmp_path, caplog):
    build_container(Settings(data_dir=tmp_path, sendgrid_api_key="SG.x"))
    assert any("HERALD_SENDGRID_WEBHOOK_PUBLIC_KEY is not set" in r.getMessage() for r in caplog.records)


# 1. Notifications: own retry schedule, fallback channel, undelivered ---------------------------
def test_an_owner_alert_keeps_trying_over_an_hour_then_the_other_channel_then_undelivered(tmp_path):
    c = factories.container(tmp_path, owner_slack_channel="C-OWNER")  # e-mail first, Slack as fallback
    c.mailer.script[OWNER] = [DeliveryError("SendGrid 503", permanent=False) for _ in range(50)]
    c.chat.script["C-OWNER"] = [DeliveryError("channel_not_found", permanent=True)]

    alerts.alert_owner(c, kind="run_failed", owner=OWNER, report_id="x", run_id="r", subject="s", body="b")
    (alert,) = c.store.list_alerts()
    start = c.clock.now()
    drain(c, path=SEND_NOTIFICATION)
    for delay in c.settings.alert_retry_delays:
        c.clock.advance(seconds=delay)
        drain(c, path=SEND_NOTIFICATION)
    tries = c.mailer.attempts[OWNER]
    assert len(tries) == 1 + len(c.settings.alert_retry_delays) and tries[-1] - start >= timedelta(hours=1)
    stored = c.store.get_alert(alert.id)
    assert stored.channels["email"].status == "failed" and stored.channels["slack"].status == "failed"
    assert stored.undelivered and not stored.sent


def test_a_heartbeat_that_fails_retries_quickly_and_counts_only_when_acknowledged(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(heartbeat_url=HC)])
    c.heartbeat.script = [DeliveryError("monitor answered HTTP 503", permanent=False)] * 2
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    assert not c.store.get_run(run.id).heartbeat_sent
    c.clock.advance(seconds=sum(c.settings.heartbeat_retry_delays[:2]))
    drain(c)
    assert c.store.get_run(run.id).heartbeat_sent
    final = c.store.get_alert(heartbeat_id("success", run.id))
    assert final.channels["heartbeat"].attempts >= 2 and sum(c.settings.heartbeat_retry_delays) < 60


# 6. Storage faults are readable --------------------------------------------------------------
def test_a_corrupt_database_is_one_line_naming_the_file_and_exit_2(tmp_path):
    (tmp_path / "herald.db").write_bytes(b"this is not a database" * 100)
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "status"])
    assert result.exit_code == 2
    assert "herald.db" in result.output and "corrupt" in result.output and "Traceback" not in result.output


def test_a_full_disk_answers_503_with_retry_after(tmp_path):
    c = factories.container(tmp_path, api_token="t0ken")
    apply_definitions(c, [factories.report()])

    def full(*args, **kwargs):
        raise storage_error(tmp_path / "herald.db", sqlite3.OperationalError("database or disk is full"))

    c.store.create_run = full
    response = (
        create_app(c)
        .test_client()
        .post(
            "/api/reports/board-pack/runs", json={}, headers={"Idempotency-Key": "k", "Authorization": "Bearer t0ken"}
        )
    )
    assert response.status_code == 503 and int(response.headers["Retry-After"]) >= 1
    assert "internal error" not in response.get_data(as_text=True)


def test_nested_units_of_work_commit_once_and_roll_back_together(tmp_path):
    db = SQLiteFile(tmp_path / "x.db", "CREATE TABLE t (v INTEGER);")
    with pytest.raises(RuntimeError), db.write() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        with db.write() as inner:
            inner.execute("INSERT INTO t VALUES (2)")
        raise RuntimeError("the outer step fails after the inner one")
    assert db.conn().execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    seen = []
    with db.write() as conn:
        conn.execute("INSERT INTO t VALUES (3)")
        db.after_commit(lambda: seen.append(db.conn().execute("SELECT COUNT(*) FROM t").fetchone()))
        assert seen == []
    assert seen == [(1,)]


def test_work_a_full_disk_interrupted_is_leased_again_within_a_minute(tmp_path):
    from herald.ports.clock import FakeClock
    from herald.ports.queue import Task

    clock = FakeClock(factories.T0)
    queue = SQLiteQueue(SQLiteFile(tmp_path / "herald.db"), clock)
    queue.enqueue(Task("t1", "/tasks/deliveries/send", {"delivery_id": "d1"}))
    leased = queue.lease_next()
    assert leased is not None
    # The disk fills: the handler's outcome cannot be settled, the task stays leased.
    clock.advance(seconds=59)
    assert queue.lease_next() is None
    clock.advance(seconds=2)  # space is back: within a minute the same task is due again
    again = queue.lease_next()
    assert again is not None and again[0].name == "t1" and again[1] == 2


def test_an_event_parameter_with_a_line_break_is_refused_and_starts_nothing(tmp_path):
    import json

    from herald.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER
    from tests.support.oracles import event_signature

    c = factories.container(tmp_path, event_secrets={"crm": "s3cret"})
    trigger = {"source": "crm", "event": "deal.closed", "params": {"client": "$.data.client"}}
    apply_definitions(c, [factories.report(schedule=None, triggers=[trigger])])
    body = json.dumps({"id": "e1", "type": "deal.closed", "data": {"client": "ACME\r\nBcc: all@example.com"}}).encode()
    stamp = str(int(c.clock.now().timestamp()))  # the event is signed now, on the moved clock
    headers = {TIMESTAMP_HEADER: stamp, SIGNATURE_HEADER: event_signature("s3cret", stamp, body)}
    response = (
        create_app(c)
        .test_client()
        .post("/webhooks/events/crm", data=body, headers={**headers, "Content-Type": "application/json"})
    )
    assert response.status_code == 422 and "control characters" in response.get_json()["error"]
    assert c.store.list_runs().items == []
