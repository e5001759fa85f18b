"""services/runs.py boundaries, from its docstrings and the README: a run reports on the
period of its slot in the report's own zone ("period"), a repeated request returns the
run as it stands and re-queues nothing once it started (``submit_run``), a run whose
report definition is gone ends failed with the reason and its end time, a dependency skip
is pinged as a success with its reason and is not announced (README "Monitoring": only an
overlap skip is), an empty render fails the run with the reason, the stored file carries
its content type and says which run and report it belongs to, a run's record shows its
progress (``updated_at``) when rendering starts and when it is rendered, and a run that
took over a dead run's render slot holds it, and of two runs taking it over at once only
one renders while the other waits its turn (README "Monitoring": at most one run of a
report renders at a time; ``overlap: queue``); a run whose render crashed keeps the slot
while it waits for its retry, and a retry that finds the slot taken waits its turn, never
skipped, whatever the overlap policy."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain.ids import heartbeat_id
from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import runs
from herald.services.scheduling import apply_definitions
from herald.services.tasks import EXECUTE_RUN
from tests import factories
from tests.drive import drain
from tests.fakes import StaticSource
from tests.unit.test_services_runs import PING, SLOT


@pytest.fixture
def clock():
    return FakeClock(SLOT)


@pytest.fixture
def c(tmp_path, clock):
    container = factories.container(tmp_path, clock)
    apply_definitions(container, [factories.report(heartbeat_url=PING)])
    return container


def kinds(c, kind):
    return [a for a in c.store.list_alerts(limit=500) if a.kind == kind]


def execute_tasks(c):
    return [t for t in c.queue.tasks.values() if t.path == EXECUTE_RUN]


# The period a run reports on ----------------------------------------------------------------
def test_a_runs_period_is_its_slots_day_in_the_reports_own_zone(c):
    tokyo = factories.report(id="tokyo-pack", schedule={"cron": "0 5 * * *", "timezone": "Asia/Tokyo"})
    slot = datetime(2026, 11, 2, 20, 0, tzinfo=UTC)  # 05:00 on 3 November in Tokyo (UTC+9)
    run = runs.new_run(tokyo, "r-tokyo", "schedule", slot, slot=slot)
    assert run.period == "2026-11-03"


def test_a_report_without_a_schedule_reports_on_the_utc_day(c):
    manual = factories.report(id="manual-pack", schedule=None)
    late = datetime(2026, 11, 2, 23, 30, tzinfo=UTC)
    assert runs.new_run(manual, "r-manual", "manual", late).period == "2026-11-02"


# A repeated request ---------------------------------------------------------------------------
def test_a_repeated_request_returns_the_run_as_it_stands_and_requeues_nothing(c, clock):
    first, created = runs.start_manual_run(c, "board-pack", request_id="key-1")
    assert created
    runs.execute_run(c, first.id)  # rendered and fanned out
    c.queue.tasks.clear()  # its tasks were consumed
    c.queue.pending.clear()
    clock.advance(minutes=5)
    again, created_again = runs.start_manual_run(c, "board-pack", request_id="key-1")
    assert created_again is False
    assert again.id == first.id and again.status == RunStatus.DELIVERING
    assert again.created_at == SLOT  # the stored run, not a new one
    assert execute_tasks(c) == []  # it started long ago: no first step to re-queue


def test_a_repeated_request_for_a_run_that_never_started_requeues_its_first_step(c):
    first, _ = runs.start_manual_run(c, "board-pack", request_id="key-1")
    c.queue.tasks.clear()  # the first step was lost (gcp: no transaction across store and queue)
    c.queue.pending.clear()
    again, created = runs.start_manual_run(c, "board-pack", request_id="key-1")
    assert (again.id, again.status, created) == (first.id, RunStatus.PENDING, False)
    assert [t.payload for t in execute_tasks(c)] == [{"run_id": first.id}]


# A run whose definition is gone ------------------------------------------------------------
def test_a_run_whose_report_definition_was_removed_ends_failed_with_the_reason(c, clock):
    gone = factories.report(id="gone-pack")  # never stored (or no longer)
    c.store.create_run(runs.new_run(gone, "r-gone", "manual", SLOT))
    clock.advance(seconds=30)
    answer = runs.execute_run(c, "r-gone").run
    assert answer.status == RunStatus.FAILED and answer.error == "report definition was removed"
    stored = c.store.get_run("r-gone")
    assert stored.status == RunStatus.FAILED
    assert stored.error == "report definition was removed"
    assert stored.finished_at == SLOT + timedelta(seconds=30)
    # Its owner is in the definition that is gone: the ops channel hears, once.
    (told,) = [a for a in c.store.list_alerts(limit=500) if a.run_id == "r-gone"]
    assert (told.target, told.kind, told.report_id) == (c.settings.ops_slack_channel, "run_failed", "gone-pack")
    assert told.subject == f"Run failed: report {gone.id} ({stored.period}) no longer exists"
    assert "its report definition was removed" in told.body
    runs.execute_run(c, "r-gone")  # redelivered
    assert len([a for a in c.store.list_alerts(limit=500) if a.run_id == "r-gone"]) == 1
    drain(c)
    (posted,) = c.chat.posted["#reporting-ops"]
    assert "gone-pack" in posted.text and "no longer exists" in posted.text
    c.store.create_run(runs.new_run(gone, "r-gone-2", "manual", SLOT))  # another run of it: told too
    runs.execute_run(c, "r-gone-2")
    assert len([a for a in c.store.list_alerts(limit=500) if a.run_id == "r-gone-2"]) == 1


# A dependency skip -------------------------------------------------------------------------------
def test_a_dependency_skip_is_pinged_as_a_success_with_its_reason_and_not_announced(c, clock):
    apply_definitions(
        c,
        [
            factories.report(
                heartbeat_url=PING,
                depends_on=[{"job": "warehouse-etl", "wait_up_to": "1h", "on_timeout": "skip"}],
            )
        ],
    )
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    assert runs.execute_run(c, run.id).run.status == RunStatus.WAITING
    assert c.store.get_alert(heartbeat_id("success", run.id)) is None  # waiting is no outcome yet
    clock.advance(hours=1)  # the wait is over, the record never came
    answer = runs.execute_run(c, run.id).run
    skipped = c.store.get_run(run.id)
    assert answer.status == RunStatus.SKIPPED and skipped.status == RunStatus.SKIPPED
    assert skipped.note.startswith("Skipped: upstream data not complete in time: warehouse-etl")
    ping = c.store.get_alert(heartbeat_id("success", run.id))
    assert ping is not None and ping.run_id == run.id
    assert ping.body == f"skipped: {skipped.note}"
    assert kinds(c, "skipped_run") == []  # only an overlap skip is announced in the ops channel
    assert c.source.renders == []


# The render ----------------------------------------------------------------------------------------
def test_an_empty_render_fails_the_run_with_the_reason(c):
    c.source = StaticSource(data=b"")
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    failed = runs.execute_run(c, run.id).run
    assert failed.status == RunStatus.FAILED
    assert failed.error == "render failed: the source produced an empty report"
    assert c.store.get_run(run.id).error == "render failed: the source produced an empty report"
    assert c.store.list_deliveries(run_id=run.id).items == []


class RecordingBlobs:
    """The blob store as the render leaves it: what was put, with its content type and metadata."""

    def __init__(self, inner):
        self.inner = inner
        self.puts = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put(self, key, data, content_type, metadata=None):
        self.puts.append((key, content_type, metadata))
        self.inner.put(key, data, content_type, metadata)


def test_the_stored_file_has_its_content_type_and_names_its_run_and_report(c):
    c.blobs = RecordingBlobs(c.blobs)
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    runs.execute_run(c, run.id)
    stored = c.store.get_run(run.id)
    assert stored.content_type == "application/pdf"  # StaticSource renders a PDF
    ((key, content_type, metadata),) = c.blobs.puts
    assert key == stored.artifact_key
    assert content_type == "application/pdf"
    assert metadata == {"run_id": run.id, "report_id": "board-pack"}
    data, served_as = c.blobs.get(key)
    assert (data, served_as) == (b"%PDF-1.4 test report", "application/pdf")


class SnapshotSource(StaticSource):
    """Takes two minutes, and notes the run's record as it stands while it renders."""

    def __init__(self, c, clock):
        super().__init__()
        self.c, self.clock, self.seen = c, clock, []

    def render(self, request):
        self.seen.append(self.c.store.get_run(request.run_id))
        self.clock.advance(minutes=2)
        return super().render(request)


def test_a_run_shows_progress_when_rendering_starts_and_when_it_is_rendered(c, clock):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="req-1")
    clock.advance(seconds=20)
    c.source = SnapshotSource(c, clock)
    runs.execute_run(c, run.id)
    (during,) = c.source.seen
    began = SLOT + timedelta(seconds=20)
    assert during.status == RunStatus.RENDERING
    assert during.started_at == began and during.updated_at == began
    stored = c.store.get_run(run.id)
    assert stored.status == RunStatus.DELIVERING
    assert stored.updated_at == began + timedelta(minutes=2)  # the render took two minutes


# The render slot after a crash ---------------------------------------------------------------
class KilledAfterRender:
    """The store as a process sees it that is killed (kill -9) right after its render is
    recorded: every later write of that process is lost."""

    def __init__(self, store):
        self._store, self.dead = store, False

    def __getattr__(self, name):
        attr = getattr(self._store, name)
        if callable(attr) and self.dead and name.startswith(("mutate", "update", "transition", "add", "create")):

            def lost(*args, **kwargs):
                raise OSError("killed")

            return lost
        return attr

    def transition_run(self, run_id, from_statuses, to, **fields):
        if self.dead:
            raise OSError("killed")
        moved = self._store.transition_run(run_id, from_statuses, to, **fields)
        if to == RunStatus.DELIVERING:
            self.dead = True
        return moved


class NextRunArrives(StaticSource):
    """While ``first`` renders, the execute task of ``arriving`` runs."""

    def __init__(self, c, first, arriving):
        super().__init__()
        self.c, self.first, self.arriving, self.answers = c, first, arriving, []

    def render(self, request):
        if request.run_id == self.first and not self.answers:
            self.answers.append(runs.execute_run(self.c, self.arriving))
        return super().render(request)


def test_a_run_that_took_over_a_dead_runs_render_slot_holds_it_while_it_renders(c):
    apply_definitions(c, [factories.report(heartbeat_url=PING, overlap="skip")])
    dead, _ = runs.start_manual_run(c, "board-pack", request_id="dead")
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    third, _ = runs.start_manual_run(c, "board-pack", request_id="third")
    store = c.store
    c.store = KilledAfterRender(store)
    with pytest.raises(OSError):
        runs.execute_run(c, dead.id)  # rendered, then killed before it let go of the slot
    c.store = store
    assert c.store.get_run(dead.id).status == RunStatus.DELIVERING
    c.source = NextRunArrives(c, second.id, third.id)
    assert runs.execute_run(c, second.id).run.status == RunStatus.DELIVERING  # took the slot over
    skipped = c.store.get_run(third.id)
    assert skipped.status == RunStatus.SKIPPED
    assert skipped.note == f"Skipped: the previous run {second.id} of this report was still rendering (overlap: skip)"
    assert [r.run_id for r in c.source.renders] == [second.id]  # one render at a time
    (told,) = kinds(c, "skipped_run")
    assert told.run_id == third.id


class PausesOnRead:
    """The store as the thread of ``paused_run`` sees it: its read of ``run_id`` waits until
    ``go`` is set (the worker was descheduled between reading the slot and taking it)."""

    def __init__(self, store, run_id, thread_name):
        self._store, self.run_id, self.thread_name = store, run_id, thread_name
        self.read, self.go = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get_run(self, run_id):
        found = self._store.get_run(run_id)
        if run_id == self.run_id and threading.current_thread().name == self.thread_name and not self.read.is_set():
            self.read.set()
            assert self.go.wait(10)
        return found


class LetsTheOtherGoOn(StaticSource):
    """While ``run_id`` renders, the paused worker goes on, and finishes, before the render ends."""

    def __init__(self, run_id, paused, worker):
        super().__init__()
        self.run_id, self.paused, self.worker = run_id, paused, worker

    def render(self, request):
        if request.run_id == self.run_id:
            self.paused.go.set()
            self.worker.join(10)
            assert not self.worker.is_alive()
        return super().render(request)


@pytest.mark.timeout(30)
def test_of_two_runs_taking_over_a_dead_runs_slot_at_once_only_one_renders(c):
    apply_definitions(c, [factories.report(heartbeat_url=PING, overlap="queue")])
    dead, _ = runs.start_manual_run(c, "board-pack", request_id="dead")
    slow, _ = runs.start_manual_run(c, "board-pack", request_id="slow")
    quick, _ = runs.start_manual_run(c, "board-pack", request_id="quick")
    store = c.store
    c.store = KilledAfterRender(store)
    with pytest.raises(OSError):
        runs.execute_run(c, dead.id)  # rendered, then killed before it let go of the slot
    c.store = PausesOnRead(store, dead.id, "slow-worker")
    answers = []
    worker = threading.Thread(
        target=lambda: answers.append(runs.execute_run(c, slow.id)), name="slow-worker", daemon=True
    )
    worker.start()
    assert c.store.read.wait(10)  # the slow worker saw the dead run holding the slot
    c.source = LetsTheOtherGoOn(quick.id, c.store, worker)
    assert runs.execute_run(c, quick.id).run.status == RunStatus.DELIVERING  # took the slot over
    assert [r.run_id for r in c.source.renders] == [quick.id]  # the slow worker rendered nothing meanwhile
    (answer,) = answers
    assert answer.run.status == RunStatus.PENDING  # it waits its turn
    waiting = c.store.get_run(slow.id)
    assert waiting.status == RunStatus.PENDING
    assert any(t.payload == {"run_id": slow.id} and t.eta is not None for t in execute_tasks(c))  # looks again soon


# A render retry keeps its slot ---------------------------------------------------------------
class CrashesOnce(StaticSource):
    """The first render raises (an outage, not the source's verdict); later ones work."""

    def render(self, request):
        if not self.renders:
            self.renders.append(request)
            raise ConnectionError("warehouse unreachable")
        return super().render(request)


@pytest.mark.parametrize("overlap", ["queue", "skip"])
def test_a_run_waiting_to_retry_its_render_keeps_the_slot(c, clock, overlap):
    apply_definitions(c, [factories.report(overlap=overlap)])
    c.source = CrashesOnce()
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    runs.execute_run(c, first.id)
    assert c.store.get_run(first.id).status == RunStatus.RENDERING  # its retry is queued
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    runs.execute_run(c, second.id)  # arrives while the first waits for its retry
    assert len(c.source.renders) == 1  # the second did not render beside it
    assert c.store.get_run(second.id).status == (RunStatus.PENDING if overlap == "queue" else RunStatus.SKIPPED)
    clock.advance(minutes=2)
    runs.execute_run(c, first.id)  # the retry
    assert c.store.get_run(first.id).status == RunStatus.DELIVERING
    if overlap == "queue":
        runs.execute_run(c, second.id)  # its re-check: the slot is free now
        assert c.store.get_run(second.id).status == RunStatus.DELIVERING
        assert [r.run_id for r in c.source.renders] == [first.id, first.id, second.id]


class RetryArrivesMidRender(CrashesOnce):
    """While the second run renders, the first run's render retry comes due."""

    def __init__(self, c, first_id):
        super().__init__()
        self.c, self.first_id, self.answers = c, first_id, []

    def render(self, request):
        if self.renders and request.run_id != self.first_id and not self.answers:
            self.answers.append(runs.execute_run(self.c, self.first_id).run)
        return super().render(request)


def test_a_retry_whose_slot_was_taken_meanwhile_waits_its_turn_even_under_skip(c, clock):
    apply_definitions(c, [factories.report(overlap="skip")])
    first, _ = runs.start_manual_run(c, "board-pack", request_id="first")
    c.source = source = RetryArrivesMidRender(c, first.id)
    runs.execute_run(c, first.id)  # crashes: a retry is queued
    clock.advance(seconds=c.settings.render_lease_seconds + 1)  # the wait outlived the slot's lease
    second, _ = runs.start_manual_run(c, "board-pack", request_id="second")
    c.queue.tasks.clear()
    runs.execute_run(c, second.id)  # takes the slot; mid-render, the first's retry arrives
    (answer,) = source.answers
    assert answer.status == RunStatus.RENDERING  # not skipped: a started run waits its turn
    assert [r.run_id for r in source.renders] == [first.id, second.id]  # it did not render beside the second
    assert [t.payload["run_id"] for t in execute_tasks(c)] == [first.id]  # its re-check is queued
    assert c.store.get_run(second.id).status == RunStatus.DELIVERING
    runs.execute_run(c, first.id)  # the re-check: the slot is free now
    assert c.store.get_run(first.id).status == RunStatus.DELIVERING
