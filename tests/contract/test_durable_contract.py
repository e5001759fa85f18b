"""Claims on run steps and notification channels, and the reconciler, on every store
(SQLite, and Firestore on Google's emulator): the mechanism "never silent, never twice"
rests on, held to the same contract on both backends."""

from __future__ import annotations

import threading
from datetime import timedelta

from herald.domain.ids import heartbeat_id
from herald.domain.records import Alert, ChannelSend
from herald.domain.states import RunStatus
from herald.services import runs
from herald.services.reconcile import reconcile
from herald.services.scheduling import apply_definitions
from herald.services.tasks import FINISH_RUN, SEND_DELIVERY
from tests import factories
from tests.drive import drain
from tests.factories import T0


def claim_once(now):
    def claim(record):
        if getattr(record, "lease_until", None) is not None:
            return None
        return {"lease_until": now + timedelta(minutes=2)}

    return claim


def test_of_racing_run_claims_on_two_connections_exactly_one_wins(open_store, tmp_path):
    first, second = open_store(), open_store()
    c = factories.container(tmp_path)
    c.store = first
    apply_definitions(c, [factories.report()])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="k")
    won: list[object] = []

    def take(store) -> None:
        won.append(store.mutate_run(run.id, claim_once(T0)))

    threads = [threading.Thread(target=take, args=(s,)) for s in (first, second, first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(result is not None for result in won) == 1
    assert first.get_run(run.id).lease_until == T0 + timedelta(minutes=2)


def test_a_notification_channel_is_claimed_once_and_pings_live_apart(open_store):
    first, second = open_store(), open_store()
    alert = Alert(
        id="a-contract",
        kind="run_failed",
        target="o@example.com",
        subject="s",
        body="b",
        created_at=T0,
        channels={"email": ChannelSend(target="o@example.com")},
    )
    ping = alert.model_copy(update={"id": heartbeat_id("success", "r1"), "kind": "heartbeat"})
    assert first.add_alert(alert) and first.add_alert(ping) and not second.add_alert(alert)

    def claim(a: Alert):
        state = a.channels["email"]
        if state.status != "pending":
            return None
        return {"channels": {"email": state.model_copy(update={"status": "sending", "attempts": 1})}}

    results = [first.mutate_alert(alert.id, claim), second.mutate_alert(alert.id, claim)]
    assert sum(r is not None for r in results) == 1
    assert second.get_alert(alert.id).channels["email"].status == "sending"
    assert [a.id for a in first.list_alerts()] == [alert.id]  # pings are not alerts people read
    assert second.get_alert(ping.id).kind == "heartbeat"


def test_the_reconciler_requeues_a_send_whose_task_was_lost(store, tmp_path):
    c = factories.container(tmp_path)  # a no-op unit of work, as on gcp
    c.store = store
    apply_definitions(c, [factories.report(schedule=None)])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="lost")
    drain(c, path="/tasks/runs/execute")
    c.queue.pending.clear()  # the deliveries were written; their send tasks never were
    c.clock.set(T0 + timedelta(seconds=c.settings.reconcile_after_seconds + 1))
    found = reconcile(c)
    # and, where the finish is polled (deferred deliveries), one look at the run to restart that
    polled = [FINISH_RUN] if store.deferred_deliveries else []
    assert len(found.deliveries) == 2
    assert sorted(t.path for t in c.queue.pending) == sorted([SEND_DELIVERY, SEND_DELIVERY, *polled])
    assert reconcile(c).total == 2 and len(c.queue.pending) == 2 + len(polled)  # the same period: the same names
    drain(c)
    if store.deferred_deliveries:  # its finish polls: move time to the next look
        c.clock.set(c.clock.now() + timedelta(seconds=runs.FINISH_POLL_MOST_SECONDS))
        drain(c)
    assert store.get_run(run.id).status == RunStatus.SUCCEEDED
    assert reconcile(c).total == 0
