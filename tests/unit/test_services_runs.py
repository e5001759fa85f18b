"""services/runs.py, from what its users see: a run's final status and error, the owner's
failure alert (it lists who did not receive it, and why), the monitor's ping, manual and
test runs (README "Routes": an ``Idempotency-Key`` makes repeats return the same run;
"send a test to me"), overlap skips (README "Monitoring": recorded, announced, success
ping ``skipped: <reason>``) and the send tasks a redelivered fan-out re-queues."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain import ids
from herald.domain.ids import heartbeat_id
from herald.domain.records import Delivery
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.ports.store import Suppression
from herald.services import on_time, runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import EXECUTE_RUN, SEND_DELIVERY, SEND_NOTIFICATION, send_task
from tests import factories
from tests.drive import drain
from tests.fakes import StaticSource

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
PING = "https://hc.example/ping/abc"


@pytest.fixture
def clock():
    return FakeClock(SLOT)


@pytest.fixture
def c(tmp_path, clock):
    container = factories.container(tmp_path, clock)
    apply_definitions(container, [factories.report(heartbeat_url=PING)])
    return container


def report(c, report_id="board-pack"):
    return c.store.get_report(report_id).definition


def owner_alerts(c, kind):
    return [a for a in c.store.list_alerts(limit=500) if a.kind == kind]


def delivered_run(c, request="req-1"):
    """A manual run rendered and fanned out: its deliveries wait for their sends."""
    run, _ = runs.start_manual_run(c, "board-pack", request_id=request)
    runs.execute_run(c, run.id)
    return c.store.get_run(run.id)


def settle(c, run_id, outcomes):
    """Each recipient's delivery ends as ``outcomes[recipient] = (status, last_error)``."""
    for d in c.store.list_deliveries(run_id=run_id).items:
        status, error = outcomes[d.recipient]
        c.store.update_delivery(d.id, status=status, last_error=error)


class SlowSource(StaticSource):
    """A source that takes two minutes to answer."""

    def __init__(self, clock, **kwargs):
        super().__init__(**kwargs)
        self.clock = clock

    def render(self, request):
        self.clock.advance(minutes=2)
        return super().render(request)


class CrashingSource(StaticSource):
    def render(self, request):
        self.renders.append(request)
        raise RuntimeError("source down")


# Manual and test runs ---------------------------------------------------------------------
def test_an_unknown_report_is_refused_by_name(c):
    with pytest.raises(runs.UnknownReport, match="no-such-report"):
        runs.start_manual_run(c, "no-such-report")


def test_a_manual_run_keeps_its_params_and_a_repeated_request_is_the_same_run(c):
    run, created = runs.start_manual_run(c, "board-pack", {"region": "emea"}, "key-1")
    assert created and run.trigger == "manual" and run.params == {"region": "emea"}
    assert c.store.get_run(run.id).params == {"region": "emea"}
    again, created_again = runs.start_manual_run(c, "board-pack", {"region": "emea"}, "key-1")
    assert (again.id, created_again) == (run.id, False)
    other, created_other = runs.start_manual_run(c, "board-pack", {"region": "emea"}, "key-2")
    assert created_other and other.id != run.id


def test_a_test_run_goes_to_its_one_address_marked_test(c):
    run, created = runs.start_manual_run(c, "board-pack", {"region": "emea"}, "t-1", test_to="me@example.com")
    assert created and run.trigger == "test" and run.test_to == "me@example.com"
    assert c.store.get_run(run.id).params == {"region": "emea"}
    runs.execute_run(c, run.id)
    (d,) = c.store.list_deliveries(run_id=run.id).items
    assert (d.recipient, d.channel, d.test) == ("me@example.com", "email", True)


def test_a_test_run_without_an_address_goes_to_the_owner(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="t-1", test_to="")
    assert run.test_to == "cfo@example.com"
    runs.execute_run(c, run.id)
    assert [d.recipient for d in c.store.list_deliveries(run_id=run.id).items] == ["cfo@example.com"]


def test_test_runs_are_one_per_address_and_request(c):
    first, _ = runs.start_manual_run(c, "board-pack", request_id="t-1", test_to="me@example.com")
    same, created = runs.start_manual_run(c, "board-pack", request_id="t-1", test_to="ME@example.com")
    assert (same.id, created) == (first.id, False)  # an address is case-insensitive
    other_address, created = runs.start_manual_run(c, "board-pack", request_id="t-1", test_to="you@example.com")
    assert created and other_address.test_to == "you@example.com"
    # Two different mailboxes are two tests, even where an upper-casing would merge them.
    sharp, _ = runs.start_manual_run(c, "board-pack", request_id="t-2", test_to="stra\u00dfe@example.com")
    double_s, created = runs.start_manual_run(c, "board-pack", request_id="t-2", test_to="strasse@example.com")
    assert created and double_s.id != sharp.id and double_s.test_to == "strasse@example.com"
    manual, created = runs.start_manual_run(c, "board-pack", request_id="t-1")
    assert created and manual.id not in (first.id, other_address.id)  # a test is not the manual run
    apply_definitions(c, [factories.report(heartbeat_url=PING), factories.report(id="other-pack")])
    elsewhere, created = runs.start_manual_run(c, "other-pack", request_id="t-1", test_to="me@example.com")
    assert created and elsewhere.id != first.id and elsewhere.report_id == "other-pack"


def test_a_finished_test_run_alerts_and_pings_nobody(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="t-1", test_to="me@example.com")
    runs.execute_run(c, run.id)
    settle(c, run.id, {"me@example.com": (DeliveryStatus.FAILED, "550 no such user")})
    assert runs.finish_run(c, run.id).run.status == RunStatus.FAILED
    assert owner_alerts(c, "delivery_failures") == []
    assert c.store.get_alert(heartbeat_id("fail", run.id)) is None


# A run's end -------------------------------------------------------------------------------
def test_a_run_that_delivered_succeeds_and_pings_its_outcome_with_counts(c, clock):
    run = delivered_run(c)
    settle(c, run.id, {"a@example.com": (DeliveryStatus.DELIVERED, ""), "b@example.com": (DeliveryStatus.SENT, "")})
    clock.advance(minutes=3)
    done = runs.finish_run(c, run.id).run
    assert done.status == RunStatus.SUCCEEDED
    stored = c.store.get_run(run.id)
    assert stored.finished_at == SLOT + timedelta(minutes=3) and stored.updated_at == SLOT + timedelta(minutes=3)
    ping = c.store.get_alert(heartbeat_id("success", run.id))
    assert ping.body == "Board pack (board-pack) 2026-11-02: succeeded; 1 delivered, 1 sent"
    drain(c, path=SEND_NOTIFICATION)
    assert c.heartbeat.pings == [(PING, "start", run.id), (PING, "success", run.id)]  # the report's monitor heard
    assert c.heartbeat.messages[-1] == "Board pack (board-pack) 2026-11-02: succeeded; 1 delivered, 1 sent"
    assert owner_alerts(c, "delivery_failures") == [] and owner_alerts(c, "run_failed") == []
    (event,) = [e for topic, e, _ in c.events.published if topic == "runs"]
    assert event["status"] == "succeeded" and event["deliveries"] == {"delivered": 1, "sent": 1}


def test_a_finished_scheduled_run_logs_its_on_time_record(c, caplog):
    scheduled = runs.new_run(report(c), ids.scheduled_run_id("board-pack", SLOT), "schedule", SLOT, slot=SLOT)
    run, _ = runs.submit_run(c, scheduled)
    runs.execute_run(c, run.id)
    settle(c, run.id, {"a@example.com": (DeliveryStatus.SENT, ""), "b@example.com": (DeliveryStatus.SENT, "")})
    with caplog.at_level(logging.INFO, logger="herald.services.on_time"):
        caplog.clear()
        runs.finish_run(c, run.id)
    lines = [r for r in caplog.records if r.getMessage() == on_time.LOG_LINE]
    assert [(r.report_id, r.run_id, r.on_time, r.status) for r in lines] == [  # type: ignore[attr-defined]
        ("board-pack", run.id, True, "succeeded")
    ]


def test_a_run_is_not_settled_while_a_delivery_is_open(c):
    run = delivered_run(c)
    settle(c, run.id, {"a@example.com": (DeliveryStatus.SENT, ""), "b@example.com": (DeliveryStatus.QUEUED, "")})
    assert runs.finish_run(c, run.id).run.status == RunStatus.DELIVERING
    assert c.store.get_run(run.id).status == RunStatus.DELIVERING
    assert c.store.get_alert(heartbeat_id("success", run.id)) is None


def test_a_finish_task_for_a_run_not_yet_going_does_nothing(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="early")
    assert runs.finish_run(c, run.id).run.status == RunStatus.PENDING
    assert c.store.get_alert(heartbeat_id("fail", run.id)) is None
    assert c.store.get_alert(heartbeat_id("success", run.id)) is None
    assert owner_alerts(c, "delivery_failures") == [] and owner_alerts(c, "run_failed") == []


def test_a_render_failure_fails_the_run_and_tells_the_owner_the_error(c, clock):
    c.source = SlowSource(clock, fail="no rows for 2026-11-02")
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    clock.advance(seconds=40)
    failed = runs.execute_run(c, run.id).run
    assert failed.status == RunStatus.FAILED and failed.error == "render failed: no rows for 2026-11-02"
    stored = c.store.get_run(run.id)
    ended = SLOT + timedelta(seconds=40, minutes=2)  # it failed when its render gave up
    assert stored.finished_at == ended and stored.updated_at == ended
    assert c.store.list_deliveries(run_id=run.id).items == []
    runs.finish_run(c, run.id)
    (alert,) = owner_alerts(c, "run_failed")
    assert alert.target == "cfo@example.com" and alert.run_id == run.id and alert.report_id == "board-pack"
    assert alert.subject == "Board pack (2026-11-02) failed"
    assert alert.body == f"Run {run.id} failed: render failed: no rows for 2026-11-02"
    ping = c.store.get_alert(heartbeat_id("fail", run.id))
    assert ping.body == "Board pack (board-pack) 2026-11-02: failed; error: render failed: no rows for 2026-11-02"
    # Failed before any delivery, it is settled by its finish: the completion event is published.
    (event,) = [e for topic, e, _ in c.events.published if topic == "runs"]
    assert event["status"] == "failed" and event["error"] == "render failed: no rows for 2026-11-02"


def test_an_unexpected_render_error_is_retried_then_fails_the_run(c, clock):
    c.source = CrashingSource()
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    answer = runs.execute_run(c, run.id).run
    assert answer.status == RunStatus.RENDERING and answer.step_attempts == 1
    assert answer.error == "render attempt 1 failed: RuntimeError: source down"
    retries = [t for t in c.queue.tasks.values() if t.path == EXECUTE_RUN and t.eta is not None]
    assert [t.eta for t in retries] == [SLOT + c.retry.delay_after(1)]
    attempt = 1
    while answer.status == RunStatus.RENDERING and attempt < 100:
        clock.set(max(t.eta for t in c.queue.tasks.values() if t.path == EXECUTE_RUN and t.eta))
        answer = runs.execute_run(c, run.id).run
        attempt += 1
    assert answer.status == RunStatus.FAILED
    assert answer.error == f"render failed after {attempt} attempts: RuntimeError: source down"
    assert c.retry.delay_after(attempt) is None and c.retry.delay_after(attempt - 1) is not None


# The owner's failure alert -----------------------------------------------------------------
def test_the_owner_hears_who_did_not_receive_it_and_why(c, tmp_path):
    many = factories.report(
        heartbeat_url=PING,
        recipients={"email": ["a@example.com", "b@example.com", "c@example.com", "d@example.com"]},
    )
    apply_definitions(c, [many])
    run = delivered_run(c)
    settle(
        c,
        run.id,
        {
            "a@example.com": (DeliveryStatus.DELIVERED, ""),
            "b@example.com": (DeliveryStatus.BOUNCED, "550 mailbox unavailable"),
            "c@example.com": (DeliveryStatus.UNKNOWN, ""),
            "d@example.com": (DeliveryStatus.FAILED, ""),
        },
    )
    assert runs.finish_run(c, run.id).run.status == RunStatus.PARTIAL
    (alert,) = owner_alerts(c, "delivery_failures")
    assert alert.target == "cfo@example.com" and alert.run_id == run.id and alert.report_id == "board-pack"
    assert alert.subject == "Board pack (2026-11-02): 3 failed deliveries"
    assert alert.body.splitlines() == [
        f"3 of 4 recipients of Board pack (2026-11-02) did not receive it (run {run.id}):",
        "- b@example.com (email): 550 mailbox unavailable",
        "- c@example.com (email): outcome unknown, not re-sent automatically (no provider event can confirm it)",
        "- d@example.com (email): failed",  # no error recorded: its status says it
    ]
    runs.finish_run(c, run.id)  # a redelivered finish task
    assert len(owner_alerts(c, "delivery_failures")) == 1


def test_an_unknown_outcome_names_the_providers_last_word(c):
    run = delivered_run(c)
    settle(
        c,
        run.id,
        {"a@example.com": (DeliveryStatus.SENT, ""), "b@example.com": (DeliveryStatus.UNKNOWN, "timeout after send")},
    )
    runs.finish_run(c, run.id)
    (alert,) = owner_alerts(c, "delivery_failures")
    assert alert.body.splitlines()[1:] == [
        "- b@example.com (email): outcome unknown, not re-sent automatically (timeout after send)"
    ]


def test_the_alert_lists_only_its_own_runs_failures(c):
    earlier = delivered_run(c, "req-1")
    settle(
        c,
        earlier.id,
        {"a@example.com": (DeliveryStatus.FAILED, "550 gone"), "b@example.com": (DeliveryStatus.SENT, "")},
    )
    runs.finish_run(c, earlier.id)
    later = delivered_run(c, "req-2")
    settle(
        c,
        later.id,
        {"a@example.com": (DeliveryStatus.SENT, ""), "b@example.com": (DeliveryStatus.DROPPED, "spam report")},
    )
    runs.finish_run(c, later.id)
    (alert,) = [a for a in owner_alerts(c, "delivery_failures") if a.run_id == later.id]
    assert alert.body.splitlines()[1:] == ["- b@example.com (email): spam report"]
    assert alert.subject == "Board pack (2026-11-02): 1 failed deliveries"


@pytest.mark.timeout(30)  # a listing that never ends is a failure, not a hang
def test_every_failure_of_a_large_run_is_listed_once(c):
    n = 1001  # more than one page of deliveries
    run = runs.new_run(report(c), "big-run", "manual", SLOT, status=RunStatus.DELIVERING)
    c.store.create_run(run.model_copy(update={"recipients_total": n}))
    recipients = factories.recipients(n)
    c.store.create_deliveries(
        [
            Delivery(
                id=ids.delivery_id("big-run", "email", r),
                run_id="big-run",
                report_id="board-pack",
                channel="email",
                recipient=r,
                status=DeliveryStatus.FAILED,
                last_error="550 no such user",
                created_at=SLOT,
                updated_at=SLOT,
            )
            for r in recipients
        ]
    )
    assert runs.finish_run(c, "big-run").run.status == RunStatus.FAILED
    (alert,) = owner_alerts(c, "delivery_failures")
    lines = alert.body.splitlines()
    assert lines[0] == f"{n} of {n} recipients of Board pack (2026-11-02) did not receive it (run big-run):"
    assert lines[1:] == [f"- {r} (email): 550 no such user" for r in sorted(recipients)]


# A redelivered fan-out ---------------------------------------------------------------------
def test_a_redelivered_fan_out_requeues_the_first_sends_still_waiting(c):
    apply_definitions(
        c,
        [
            factories.report(
                heartbeat_url=PING,
                recipients={"email": ["a@example.com", "b@example.com", "c@example.com", "gone@example.com"]},
            )
        ],
    )
    c.store.add_suppression(Suppression("gone@example.com", "*", "bounced", SLOT))
    other = delivered_run(c, "other")  # another run's deliveries also wait
    run = delivered_run(c, "req-1")
    settle(
        c,
        run.id,
        {
            "a@example.com": (DeliveryStatus.QUEUED, ""),
            "b@example.com": (DeliveryStatus.QUEUED, ""),
            "c@example.com": (DeliveryStatus.SENT, ""),
            "gone@example.com": (DeliveryStatus.SUPPRESSED, ""),
        },
    )
    c.queue.tasks.clear()  # the send tasks were lost (gcp: no transaction across store and queue)
    c.queue.pending.clear()
    runs.execute_run(c, run.id)  # the execute task, redelivered
    waiting = [d for d in c.store.list_deliveries(run_id=run.id).items if d.status == DeliveryStatus.QUEUED]
    sends = {t.name for t in c.queue.tasks.values() if t.path == SEND_DELIVERY}
    assert sends == {send_task(d.id, 0).name for d in waiting}
    assert len(waiting) == 2 and other.id != run.id


def test_a_fan_out_redelivered_while_every_send_waits_queues_no_second_task(c):
    run = delivered_run(c)
    runs.execute_run(c, run.id)  # the execute task, redelivered after its fan-out committed
    sends = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY]
    deliveries = c.store.list_deliveries(run_id=run.id).items
    assert sorted(t.payload["delivery_id"] for t in sends) == sorted(d.id for d in deliveries)
    assert len(sends) == 2


@pytest.mark.timeout(30)  # a listing that never ends is a failure, not a hang
def test_a_redelivered_fan_out_requeues_every_page(c):
    recipients = factories.recipients(1001)
    apply_definitions(c, [factories.report(recipients={"email": recipients})])
    run = delivered_run(c)
    c.queue.tasks.clear()
    c.queue.pending.clear()
    runs.execute_run(c, run.id)
    sends = [t for t in c.queue.tasks.values() if t.path == SEND_DELIVERY]
    assert len(sends) == 1001
    assert {t.payload["delivery_id"] for t in sends} == {ids.delivery_id(run.id, "email", r) for r in recipients}


# Overlap skips -----------------------------------------------------------------------------
class OverlappingSource(StaticSource):
    """While the first run renders, the next run of the same report arrives."""

    def __init__(self, c, next_run_id):
        super().__init__()
        self.c, self.next_run_id, self.answers = c, next_run_id, []

    def render(self, request):
        if request.run_id != self.next_run_id and not self.answers:
            self.c.clock.advance(minutes=1)
            self.answers.append(runs.execute_run(self.c, self.next_run_id))
        return super().render(request)


def test_an_overlap_skip_is_recorded_announced_and_pinged_as_success(c):
    apply_definitions(c, [factories.report(heartbeat_url=PING, overlap="skip")])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    c.source = OverlappingSource(c, second.id)
    runs.execute_run(c, first.id)
    skipped = c.store.get_run(second.id)
    reason = f"Skipped: the previous run {first.id} of this report was still rendering (overlap: skip)"
    assert skipped.status == RunStatus.SKIPPED and skipped.note == reason
    assert skipped.finished_at == SLOT + timedelta(minutes=1) and skipped.updated_at == SLOT + timedelta(minutes=1)
    assert c.source.answers[0].run.status == RunStatus.SKIPPED
    (told,) = owner_alerts(c, "skipped_run")
    assert told.subject == "Skipped: Board pack (2026-11-02)" and told.body == reason
    assert told.target == "#reporting-ops" and told.report_id == "board-pack" and told.run_id == second.id
    ping = c.store.get_alert(heartbeat_id("success", second.id))
    assert ping.body == f"skipped: {reason}"
    assert c.store.get_run(first.id).status == RunStatus.DELIVERING


def test_another_reports_render_is_not_held_up(c):
    apply_definitions(
        c, [factories.report(heartbeat_url=PING, overlap="skip"), factories.report(id="other-pack", overlap="skip")]
    )
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    other, _ = runs.start_manual_run(c, "other-pack", request_id="first")
    c.source = OverlappingSource(c, other.id)
    runs.execute_run(c, first.id)
    assert c.store.get_run(other.id).status == RunStatus.DELIVERING
    assert owner_alerts(c, "skipped_run") == []


class DiesBeforeRendering:
    """The store, as seen by a process killed just before its run's move to rendering."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def transition_run(self, run_id, from_statuses, to, **fields):
        if to == RunStatus.RENDERING:
            raise OSError("killed")
        return self._store.transition_run(run_id, from_statuses, to, **fields)


def test_a_run_that_died_holding_the_render_slot_renders_when_redelivered(c):
    apply_definitions(c, [factories.report(heartbeat_url=PING, overlap="skip")])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    store = c.store
    c.store = DiesBeforeRendering(store)
    with pytest.raises(OSError):
        runs.execute_run(c, run.id)
    c.store = store
    assert runs.execute_run(c, run.id).run.status == RunStatus.DELIVERING  # the redelivered execute task
    assert owner_alerts(c, "skipped_run") == []


class OutlivingSource(StaticSource):
    """The first run's render outlives its render lease; then the next run arrives."""

    def __init__(self, c, clock, next_run_id):
        super().__init__()
        self.c, self.clock, self.next_run_id = c, clock, next_run_id

    def render(self, request):
        if request.run_id != self.next_run_id:
            self.clock.set(SLOT + timedelta(seconds=self.c.settings.render_lease_seconds))  # its lease just ended
            runs.execute_run(self.c, self.next_run_id)
        return super().render(request)


def test_a_render_slot_whose_lease_has_ended_is_free(c, clock):
    apply_definitions(c, [factories.report(heartbeat_url=PING, overlap="skip")])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    c.source = OutlivingSource(c, clock, second.id)
    runs.execute_run(c, first.id)
    assert c.store.get_run(second.id).status == RunStatus.DELIVERING
    assert owner_alerts(c, "skipped_run") == []


def test_a_run_records_when_it_started_and_pings_start_only_with_a_monitor(c, clock):
    apply_definitions(c, [factories.report(heartbeat_url=PING), factories.report(id="quiet-pack")])
    quiet, _ = runs.start_manual_run(c, "quiet-pack", request_id="req-1")
    test, _ = runs.start_manual_run(c, "board-pack", request_id="req-1", test_to="me@example.com")
    clock.advance(seconds=20)
    runs.execute_run(c, quiet.id)
    runs.execute_run(c, test.id)
    assert c.store.get_run(quiet.id).started_at == SLOT + timedelta(seconds=20)
    assert c.store.get_alert(heartbeat_id("start", quiet.id)) is None  # no monitor to tell
    assert c.store.get_alert(heartbeat_id("start", test.id)) is None  # a test is never in the heartbeats


# What the source is asked to render -------------------------------------------------------
def test_the_source_gets_the_summary_as_it_reads_before_rows_are_counted(c):
    apply_definitions(c, [factories.report(summary="{name} for {period}: {rows} rows, ledger {params[ledger]}")])
    run, _ = runs.start_manual_run(c, "board-pack", params={"ledger": "GL"}, request_id="req-1")
    runs.execute_run(c, run.id)
    (request,) = c.source.renders
    assert (request.run_id, request.period, request.params) == (run.id, run.period, {"ledger": "GL"})
    # The PDF source re-counts the rows into exactly this provisional line (adapters/sources/pdf.py).
    assert request.summary == f"Board pack for {run.period}: 0 rows, ledger GL"
    assert c.store.get_run(run.id).summary == f"Board pack for {run.period}: 3 rows, ledger GL"
