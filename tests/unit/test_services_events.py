"""services/events.py and the run outcomes of services/runs.py that other systems and
monitors read: the ``run.completed`` / ``delivery.failed`` events (deterministic
``event_id`` for subscribers to de-duplicate by; publishing never changes an outcome),
the monitor's one-line outcome, a skipped run's announcement, and a render that crashes."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from herald.domain.errors import DeliveryError
from herald.domain.records import Delivery
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.ports.events import PublishError
from herald.services import events, runs
from herald.services.runs import new_run
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def run_of(**fields):
    run = new_run(factories.report(), "run-1", "schedule", SLOT, slot=SLOT)
    return run.model_copy(update=fields)


def test_run_completed_carries_the_outcome_and_a_stable_event_id(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT))
    run = run_of(status=RunStatus.PARTIAL, error="", finished_at=SLOT.replace(minute=3))
    events.run_completed(c, run, {"sent": 2, "failed": 1})
    ((topic, event, key),) = c.events.published
    assert (topic, key) == ("runs", "board-pack")
    assert event == {
        "type": "run.completed",
        "event_id": "run.completed:run-1",
        "run_id": "run-1",
        "report_id": "board-pack",
        "status": "partial",
        "period": "2026-11-02",
        "error": "",
        "deliveries": {"sent": 2, "failed": 1},
        "finished_at": "2026-11-02T07:03:00+00:00",
    }
    events.run_completed(c, run.model_copy(update={"finished_at": None, "error": "boom"}), {})
    later = c.events.published[-1][1]
    assert later["finished_at"] == SLOT.isoformat() and later["error"] == "boom"


def test_delivery_failed_says_who_why_and_whether_for_good(tmp_path):
    c = factories.container(tmp_path, FakeClock(SLOT))
    d = Delivery(
        id="d-1",
        run_id="run-1",
        report_id="board-pack",
        channel="email",
        recipient="a@example.com",
        attempts=4,
        created_at=SLOT,
        updated_at=SLOT,
    )
    events.delivery_failed(c, d, "550 no such user", permanent=True)
    ((topic, event, key),) = c.events.published
    assert (topic, key) == ("deliveries", "run-1")
    assert event == {
        "type": "delivery.failed",
        "event_id": "delivery.failed:d-1",
        "delivery_id": "d-1",
        "run_id": "run-1",
        "report_id": "board-pack",
        "channel": "email",
        "recipient": "a@example.com",
        "error": "550 no such user",
        "permanent": True,
        "attempts": 4,
    }


def test_a_publish_error_is_logged_and_swallowed(tmp_path, caplog):
    c = factories.container(tmp_path, FakeClock(SLOT))

    def refuse(*args, **kwargs):
        raise PublishError("topic gone", permanent=True)

    c.events.publish = refuse
    with caplog.at_level(logging.ERROR, logger="herald.services.events"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        events.run_completed(c, run_of(), {})
    (line,) = [r for r in caplog.records if r.name == "herald.services.events"]
    assert line.getMessage() == "event not published"
    assert (line.event_type, line.event_id, line.error) == ("run.completed", "run.completed:run-1", "topic gone")  # type: ignore[attr-defined]


def test_a_failed_delivery_in_a_run_publishes_its_event(tmp_path):
    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])
    c.mailer.script["a@example.com"] = [DeliveryError("550 no such user", permanent=True)]
    runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    published = {e["type"]: e for _, e, _ in c.events.published}
    assert published["delivery.failed"]["recipient"] == "a@example.com"
    assert published["delivery.failed"]["permanent"] is True and published["delivery.failed"]["attempts"] == 1
    assert published["run.completed"]["status"] == "partial"
    assert published["run.completed"]["deliveries"] == {"failed": 1, "sent": 1}


def test_the_outcome_line_is_what_a_monitor_shows():
    report = factories.report()
    assert runs.outcome_line(report, run_of(status=RunStatus.SUCCEEDED), {"sent": 2}) == (
        "Board pack (board-pack) 2026-11-02 07:00 UTC: succeeded; 2 sent"
    )
    assert runs.outcome_line(report, run_of(status=RunStatus.PARTIAL), {"sent": 2, "failed": 1, "bounced": 1}) == (
        "Board pack (board-pack) 2026-11-02 07:00 UTC: partial; 1 bounced, 1 failed, 2 sent"
    )
    manual = new_run(report, "m", "manual", SLOT).model_copy(update={"status": RunStatus.FAILED, "error": "boom"})
    assert runs.outcome_line(report, manual) == "Board pack (board-pack) 2026-11-02: failed; error: boom"


def test_run_view_is_the_run_and_its_live_counts():
    run = run_of()
    assert runs.run_view(run, {"sent": 1}) == {**run.to_doc(), "deliveries": {"sent": 1}}


def test_a_render_that_raises_is_retried_then_fails_with_the_attempts(tmp_path, caplog):
    c = factories.container(tmp_path, max_retries=1, retry_delays="60")
    apply_definitions(c, [factories.report()])

    class Broken:
        def render(self, request):
            raise ConnectionError("warehouse unreachable")

    c.source = Broken()
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    with caplog.at_level(logging.ERROR, logger="herald.services.runs"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        drain(c)
    waiting = c.store.get_run(run.id)
    assert waiting.status == RunStatus.RENDERING and waiting.step_attempts == 1
    assert waiting.error == "render attempt 1 failed: ConnectionError: warehouse unreachable"
    assert waiting.note == ""  # the note goes to every recipient: an operator's error never does
    line = next(r for r in caplog.records if r.getMessage() == "render raised an unexpected error")
    assert (line.run_id, line.report_id, line.attempt) == (run.id, "board-pack", 1)  # type: ignore[attr-defined]
    c.clock.advance(seconds=60)
    drain(c)
    failed = c.store.get_run(run.id)
    assert failed.status == RunStatus.FAILED and failed.finished_at == c.clock.now()
    assert failed.error == "render failed after 2 attempts: ConnectionError: warehouse unreachable"
    assert any("render failed after 2 attempts" in a.body for a in c.store.list_alerts())


def test_a_render_error_fails_the_run_at_once_with_its_time(tmp_path):
    from tests.fakes import StaticSource

    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report()])
    c.source = StaticSource(fail="no such table")
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    failed = c.store.get_run(run.id)
    assert failed.status == RunStatus.FAILED and failed.error == "render failed: no such table"
    assert failed.finished_at == c.clock.now()


def test_an_overlap_skip_is_announced_to_ops_with_its_reason(tmp_path):
    c = factories.container(tmp_path)
    report = factories.report(schedule=None, overlap="skip")
    apply_definitions(c, [report])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="one")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="two")
    assert runs._render_slot(c, report, first) is None  # the first run holds the report's render slot
    c.store.transition_run(first.id, [RunStatus.PENDING], RunStatus.RENDERING)
    skipped = runs.execute_run(c, second.id).run
    assert skipped.status == RunStatus.SKIPPED
    (ops,) = [a for a in c.store.list_alerts() if a.kind == "skipped_run"]
    assert ops.subject == f"Skipped: Board pack ({skipped.period})" and ops.body == skipped.note
    assert (ops.report_id, ops.run_id, ops.target) == ("board-pack", second.id, "#reporting-ops")
    assert runs.execute_run(c, second.id).run.status == RunStatus.SKIPPED  # a redelivered task: said once
    assert len([a for a in c.store.list_alerts() if a.kind == "skipped_run"]) == 1
    third, _ = runs.start_manual_run(c, "board-pack", request_id="three")
    assert runs.execute_run(c, third.id).run.status == RunStatus.SKIPPED
    assert len([a for a in c.store.list_alerts() if a.kind == "skipped_run"]) == 2  # one per skipped run
