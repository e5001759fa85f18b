"""Boundaries of Herald's promises, each written from README.md / ARCHITECTURE.md, not from
the code: the expected answer comes from the promise quoted above each test.

A test that shows a real bug in code this file does not own is marked
``xfail(strict=True, reason="bug: ...")`` so the bug is listed, and the mark must go
when the bug is fixed.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from herald.domain.errors import DeliveryError
from herald.domain.states import DeliveryStatus, RunStatus
from herald.ports.clock import FakeClock
from herald.services.scheduling import apply_definitions, tick
from herald.services.tasks import SEND_NOTIFICATION
from herald.services.watchdog import run_watchdog
from herald.web.app import create_app
from tests import factories
from tests.drive import drain
from tests.support.oracles import event_signature, snapshot
from tests.support.sendgrid_events import EventSigner, event

SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)  # 07:00 Europe/London = 07:00 UTC in November
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)
OPS = "#reporting-ops"  # README: "one alert to #reporting-ops"
SEVEN_DAYS = timedelta(days=7)  # README: "a personal download link (/l/<token>, valid 7 days)"


def make(tmp_path: Path, at: datetime, *reports: Any, **settings: Any) -> Any:
    """A container whose definitions were applied a minute before SLOT, its clock then at ``at``."""
    clock = FakeClock(SLOT - timedelta(minutes=1))
    c = factories.container(tmp_path, clock, **settings)
    apply_definitions(c, list(reports) or [factories.report()])
    clock.set(at)
    return c


def runs_of(c: Any, report_id: str = "board-pack") -> list[Any]:
    return c.store.list_runs(report_id=report_id, limit=100).items


def deliveries_of(c: Any, run_id: str) -> list[Any]:
    return c.store.list_deliveries(run_id=run_id, limit=1000).items


# Run ledger: "one run per (report, slot | event id)", "idempotent create" -----------------
def test_two_ticks_racing_for_one_slot_make_one_run_render_once_and_advance_the_schedule(tmp_path):
    first = make(tmp_path, SLOT + timedelta(seconds=5))
    second = factories.container(tmp_path, first.clock)  # another process: its own connection, same database
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run_tick(name: str, c: Any) -> None:
        try:
            barrier.wait(timeout=10)
            results[name] = tick(c)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run_tick, args=(n, c)) for n, c in (("first", first), ("second", second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert [r.failed for r in results.values()] == [[], []]
    (run,) = runs_of(first)
    assert run.slot == SLOT
    assert {run_id for r in results.values() for run_id in r.started} == {run.id}
    assert first.store.get_report("board-pack").next_fire_at == SLOT + DAY
    # Both processes' queues run what they were given: still one render, one mail each.
    drain(first)
    drain(second)
    assert len(first.source.renders) + len(second.source.renders) == 1
    sent = {to: len(first.mailer.sent[to]) + len(second.mailer.sent[to]) for to in ("a@example.com", "b@example.com")}
    assert sent == {"a@example.com": 1, "b@example.com": 1}
    assert first.store.get_run(run.id).status == RunStatus.SUCCEEDED


class CrashOnAdvance:
    """The store, except that advancing a schedule fails (the process dies right there) once."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.crashes = 1

    def advance_schedule(self, *args: Any, **kwargs: Any) -> bool:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("crash between creating the run and advancing the schedule")
        return bool(self._store.advance_schedule(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_crash_between_run_creation_and_advancing_the_schedule_repeats_nothing(tmp_path):
    c = make(tmp_path, SLOT + timedelta(seconds=5))
    clock = c.clock
    real = c.store
    c.store = CrashOnAdvance(real)
    crashed = tick(c)
    (run,) = runs_of(c)  # the run was written before the crash
    assert crashed.failed == ["board-pack"]
    assert real.get_report("board-pack").next_fire_at == SLOT  # not advanced: the next tick retries the slot
    clock.advance(seconds=50)  # the next tick, later: the run id must come from (report, slot), not from now
    retried = tick(c)
    assert retried.failed == [] and retried.started == [run.id]
    assert [r.id for r in runs_of(c)] == [run.id]
    assert real.get_report("board-pack").next_fire_at == SLOT + DAY
    drain(c)
    assert {to: len(m) for to, m in c.mailer.sent.items()} == {"a@example.com": 1, "b@example.com": 1}


# Business events: "idempotent by (source, event id)" ---------------------------------------
def _two_source_report() -> Any:
    return factories.report(
        id="deal-pack",
        schedule=None,
        recipients={"email": ["am@example.com"]},
        triggers=[{"source": "crm", "event": "deal.closed"}, {"source": "erp", "event": "deal.closed"}],
    )


def _post_event(client: Any, c: Any, source: str, body: bytes, secret: str) -> Any:
    stamp = str(int(c.clock.now().timestamp()))
    headers = {"X-Herald-Timestamp": stamp, "X-Herald-Signature": event_signature(secret, stamp, body)}
    return client.post(f"/webhooks/events/{source}", data=body, headers=headers, content_type="application/json")


def test_the_same_event_id_from_two_sources_is_two_events_with_two_runs(tmp_path):
    c = factories.container(tmp_path, event_secrets={"crm": "crm-secret", "erp": "erp-secret"})
    apply_definitions(c, [_two_source_report()])
    client = create_app(c).test_client()
    body = json.dumps({"id": "evt-7", "type": "deal.closed", "data": {}}).encode()
    from_crm = _post_event(client, c, "crm", body, "crm-secret")
    from_erp = _post_event(client, c, "erp", body, "erp-secret")
    assert (from_crm.status_code, from_erp.status_code) == (202, 202)  # neither is a replay of the other
    assert from_erp.get_json()["replayed"] is False
    crm_runs, erp_runs = from_crm.get_json()["runs"], from_erp.get_json()["runs"]
    assert len(crm_runs) == 1 and len(erp_runs) == 1 and crm_runs != erp_runs
    assert len(runs_of(c, "deal-pack")) == 2
    # A repeat from either source is that source's replay: the same run, nothing new.
    again = _post_event(client, c, "erp", body, "erp-secret")
    assert again.status_code == 200 and again.get_json()["runs"] == erp_runs
    assert len(runs_of(c, "deal-pack")) == 2


# Dependencies: "at wait_up_to its on_timeout decides" ---------------------------------------
# Two dependencies time out with different policies. Herald never reports success that did
# not happen and never fails silently (README's first line, ARCHITECTURE decision 5): the
# loudest policy wins, fail > skip > send_anyway, and a run keeps waiting while a
# dependency that has not timed out yet could still arrive.
def _gated(*deps: dict[str, str]) -> Any:
    return factories.report(depends_on=list(deps))


def _dep(job: str, on_timeout: str, wait: str = "1h") -> dict[str, str]:
    return {"job": job, "period": "day", "wait_up_to": wait, "on_timeout": on_timeout}


def _run_until(c: Any, clock: FakeClock, until: datetime) -> Any:
    """Tick at the slot, then move the clock to ``until`` in re-check-sized steps, running
    due tasks at each step, as the queue would."""
    clock.set(SLOT)
    (run_id,) = tick(c).started
    drain(c)
    while clock.now() < until:
        clock.set(min(until, clock.now() + timedelta(minutes=5)))
        drain(c)
    return c.store.get_run(run_id)


@pytest.mark.parametrize(
    ("policies", "outcome"),
    [
        (("fail", "send_anyway"), RunStatus.FAILED),
        (("send_anyway", "fail"), RunStatus.FAILED),
        (("fail", "skip"), RunStatus.FAILED),
        (("skip", "send_anyway"), RunStatus.SKIPPED),
        (("send_anyway", "skip"), RunStatus.SKIPPED),
    ],
)
def test_two_timed_out_dependencies_the_louder_policy_wins(tmp_path, policies, outcome):
    c = make(tmp_path, SLOT - timedelta(minutes=1), _gated(_dep("etl-a", policies[0]), _dep("etl-b", policies[1])))
    clock = c.clock
    run = _run_until(c, clock, SLOT + timedelta(hours=1, minutes=5))
    assert run.status == outcome
    assert sum(len(m) for to, m in c.mailer.sent.items() if to != "cfo@example.com") == 0  # nobody got the report


def test_a_send_anyway_timeout_waits_for_a_fail_dependency_that_has_not_timed_out(tmp_path):
    c = make(tmp_path, SLOT, _gated(_dep("etl-a", "send_anyway", "1h"), _dep("etl-b", "fail", "2h")))
    clock = c.clock
    run = _run_until(c, clock, SLOT + timedelta(hours=1, minutes=30))
    assert run.status == RunStatus.WAITING  # etl-b could still arrive
    assert c.mailer.sent == {}
    clock.set(SLOT + timedelta(hours=2))
    drain(c)
    assert c.store.get_run(run.id).status == RunStatus.FAILED


# "wait_up_to: 2h (from the slot, or from creation)": a scheduled run counts from its slot,
# even when the tick created it late (within the misfire window).
def test_a_run_created_after_its_slot_times_out_counted_from_the_slot(tmp_path):
    c = make(tmp_path, SLOT + timedelta(minutes=8), _gated(_dep("etl", "fail", "1h")))  # the tick is 8 min late
    clock = c.clock
    (run_id,) = tick(c).started
    drain(c)
    assert c.store.get_run(run_id).created_at == SLOT + timedelta(minutes=8)
    for instant in (SLOT + timedelta(minutes=30), SLOT + timedelta(hours=1) - SECOND):
        clock.set(instant)
        drain(c)
        assert c.store.get_run(run_id).status == RunStatus.WAITING
    clock.set(SLOT + timedelta(hours=1))  # "at wait_up_to its on_timeout decides"
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.FAILED


# Watchdog: "a slot without a completed run 20 minutes after its time -> one alert".
def test_a_run_created_after_its_slot_is_late_twenty_minutes_after_the_slot(tmp_path):
    c = make(tmp_path, SLOT + timedelta(minutes=8), _gated(_dep("etl", "fail", "2h")))  # it will still be waiting
    clock = c.clock
    (run_id,) = tick(c).started
    drain(c)
    clock.set(SLOT + timedelta(minutes=20))
    run_watchdog(c)
    drain(c, path=SEND_NOTIFICATION)
    assert c.chat.posted.get(OPS, []) == []  # exactly the grace: not late yet
    clock.set(SLOT + timedelta(minutes=20) + SECOND)
    run_watchdog(c)
    drain(c, path=SEND_NOTIFICATION)
    posts = c.chat.posted.get(OPS, [])
    assert len(posts) == 1, "late 20 minutes after the slot, not 20 minutes after the run was created"
    assert "Board pack" in posts[0].text and c.store.get_run(run_id).status == RunStatus.WAITING


# Links: "a personal download link (/l/<token>, valid 7 days)" --------------------------------
@pytest.fixture
def sent_link(tmp_path: Path) -> tuple[Any, Any, Any]:
    signer = EventSigner()
    c = make(tmp_path, SLOT, sendgrid_webhook_public_key=signer.public_key)
    (run_id,) = tick(c).started
    drain(c)
    d = next(d for d in deliveries_of(c, run_id) if d.recipient == "a@example.com")
    assert d.status == DeliveryStatus.SENT and c.mailer.sent["a@example.com"]
    assert f"/l/{d.link_token}" in c.mailer.sent["a@example.com"][0].text
    return c, signer, d


def test_a_link_is_valid_just_before_seven_days_and_refused_just_after(sent_link):
    c, _, d = sent_link
    client = create_app(c).test_client()
    c.clock.set(SLOT + SEVEN_DAYS - SECOND)
    assert client.get(f"/l/{d.link_token}").status_code == 200
    assert client.post(f"/l/{d.link_token}").status_code == 303  # the download itself
    c.clock.set(SLOT + SEVEN_DAYS + SECOND)
    assert client.get(f"/l/{d.link_token}").status_code == 410
    before = snapshot(c)
    assert client.post(f"/l/{d.link_token}").status_code == 410  # no download, none counted
    assert snapshot(c) == before


def test_a_delivery_updated_during_its_links_life_keeps_the_links_seven_days(sent_link):
    c, signer, d = sent_link
    client = create_app(c).test_client()
    c.clock.set(SLOT + DAY)  # a day later SendGrid reports delivered and opened: the delivery changes
    stamp = int(c.clock.now().timestamp())
    body, headers = signer.signed([event("delivered", d, c.clock.now()), event("open", d, c.clock.now())], stamp)
    assert client.post("/webhooks/sendgrid", data=body, headers=headers).status_code == 200
    assert c.store.get_delivery(d.id).updated_at > d.updated_at  # it was updated
    c.clock.set(SLOT + SEVEN_DAYS - SECOND)
    assert client.get(f"/l/{d.link_token}").status_code == 200
    c.clock.set(SLOT + SEVEN_DAYS + SECOND)
    assert client.get(f"/l/{d.link_token}").status_code == 410  # seven days from the e-mail, not the update


# Bearer token: "Authorization: Bearer $HERALD_API_TOKEN" ------------------------------------
@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("", 401),  # no credentials at all: 401
        ("Bearer", 401),  # the scheme alone
        ("Bearer ", 403),  # a Bearer credential that is there but empty is a wrong one: 403
        ("Bearer \t", 403),
        ("bearer s3cret-api-token", 401),  # not the scheme the route documents
        ("Bearer s3cret-api-toke", 403),  # truncated
        ("Bearer s", 403),
        ("Bearer s3cret-api-token-and-more", 403),
        ("Bearer  s3cret-api-token x", 403),
    ],
)
def test_an_empty_or_truncated_bearer_token_is_refused(tmp_path, header, status):
    c = factories.container(tmp_path, api_token="s3cret-api-token")
    apply_definitions(c, [factories.report()])
    client = create_app(c).test_client()
    before = snapshot(c)
    response = client.post("/api/reports/board-pack/runs", json={}, headers={"Authorization": header})
    assert response.status_code == status
    assert snapshot(c) == before  # no run was started
    assert client.get("/api/reports", headers={"Authorization": header}).status_code == status
    ok = client.get("/api/reports", headers={"Authorization": "Bearer s3cret-api-token"})
    assert ok.status_code == 200  # the oracle: the whole token opens it


# Admin: "POSTs carry a CSRF token" ---------------------------------------------------------
ADMIN_TOKEN = "admin-token-for-boundaries"


@pytest.mark.parametrize(("supplied", "status"), [("", 400), ("anything", 403), ("None", 403)])
def test_an_admin_post_from_a_session_holding_no_csrf_token_is_refused(tmp_path, supplied, status):
    c = factories.container(tmp_path, admin_token=ADMIN_TOKEN)
    apply_definitions(c, [factories.report()])
    c.store.add_suppression(_suppression("gus@example.com", "*"))
    client = create_app(c).test_client()
    login = client.post("/admin/login", data={"token": ADMIN_TOKEN, "name": "Olivia", "next": "/admin/alerts"})
    assert login.status_code == 303
    with client.session_transaction() as session:
        assert [k for k in session if "csrf" in k], "the login session should hold a CSRF token"
        for key in [k for k in session if "csrf" in k]:
            del session[key]  # a session (an older cookie, say) that holds no CSRF token
    before = snapshot(c)
    lift = client.post("/admin/suppressions/lift", data={"csrf_token": supplied, "recipient": "gus@example.com"})
    assert lift.status_code == status
    assert snapshot(c) == before
    assert c.store.find_suppression("gus@example.com", "board-pack") is not None


# Suppressions and recipients: e-mail addresses are compared without case -------------------
def _suppression(recipient: str, scope: str) -> Any:
    from herald.ports.store import Suppression

    return Suppression(recipient=recipient, scope=scope, reason="manual", created_at=SLOT - DAY)


def test_a_bounce_for_a_mixed_case_address_suppresses_it_in_the_next_run(tmp_path):
    signer = EventSigner()
    report = factories.report(recipients={"email": ["Ann.Lee@Example.com", "b@example.com"]})
    c = make(tmp_path, SLOT, report, sendgrid_webhook_public_key=signer.public_key)
    clock = c.clock
    (first,) = tick(c).started
    drain(c)
    d = next(d for d in deliveries_of(c, first) if d.recipient.lower() == "ann.lee@example.com")
    bounce = event("bounce", d, clock.now(), email="ANN.LEE@EXAMPLE.COM", type="bounce", reason="550 no such user")
    body, headers = signer.signed([bounce], int(clock.now().timestamp()))
    assert create_app(c).test_client().post("/webhooks/sendgrid", data=body, headers=headers).status_code == 200
    apply_definitions(c, [factories.report(recipients={"email": ["ann.lee@example.com", "b@example.com"]})])
    clock.set(SLOT + DAY)
    (second,) = tick(c).started
    drain(c)
    statuses = {d.recipient.lower(): d.status for d in deliveries_of(c, second)}
    assert statuses == {"ann.lee@example.com": DeliveryStatus.SUPPRESSED, "b@example.com": DeliveryStatus.SENT}
    assert sum(len(m) for to, m in c.mailer.sent.items() if to.lower() == "ann.lee@example.com") == 1


@pytest.mark.parametrize(("stored", "listed"), [("a@example.com", "A@Example.COM"), ("A@EXAMPLE.com", "a@example.com")])
def test_a_suppression_matches_recipients_in_any_case(tmp_path, stored, listed):
    c = make(tmp_path, SLOT, factories.report(recipients={"email": [listed, "b@example.com"]}))
    c.store.add_suppression(_suppression(stored, "board-pack"))
    (run_id,) = tick(c).started
    drain(c)
    statuses = {d.recipient.lower(): d.status for d in deliveries_of(c, run_id)}
    assert statuses["a@example.com"] == DeliveryStatus.SUPPRESSED
    assert [to for to in c.mailer.sent if to.lower() == "a@example.com"] == []


# "one delivery record + one task per (recipient, channel)"; delivery_id = f(run, channel,
# recipient) and an e-mail address does not change with its case.
def test_one_address_in_two_cases_is_one_delivery_and_one_mail(tmp_path):
    c = factories.container(tmp_path, event_secrets={"crm": "crm-secret"})
    report = factories.report(
        id="deal-pack",
        schedule=None,
        recipients={"email": ["CEO@Acme.example"]},
        triggers=[{"source": "crm", "event": "deal.closed", "recipients": "$.data.contacts[*]"}],
    )
    apply_definitions(c, [report])
    client = create_app(c).test_client()
    body = json.dumps({"id": "e1", "type": "deal.closed", "data": {"contacts": ["ceo@acme.example"]}}).encode()
    response = _post_event(client, c, "crm", body, "crm-secret")
    assert response.status_code == 202
    (run_id,) = response.get_json()["runs"]
    drain(c)
    (only,) = deliveries_of(c, run_id)
    assert only.recipient.lower() == "ceo@acme.example"
    assert sum(len(m) for to, m in c.mailer.sent.items() if to.lower() == "ceo@acme.example") == 1


def test_delivery_ids_do_not_depend_on_the_case_of_the_address(tmp_path):
    """Two runs of one event-less manual report: the same address spelled differently in
    the definition between a crash and a redelivered fan-out still maps to one delivery."""
    from herald.services import runs

    c = factories.container(tmp_path)
    apply_definitions(c, [factories.report(recipients={"email": ["Mixed.Case@Example.com"]})])
    run, _ = runs.start_manual_run(c, "board-pack", request_id="case")
    drain(c)
    (first,) = deliveries_of(c, run.id)
    apply_definitions(c, [factories.report(recipients={"email": ["mixed.case@example.com"]})])
    runs.fan_out(c, c.store.get_report("board-pack").definition, c.store.get_run(run.id))  # redelivered fan-out
    drain(c)
    assert [d.id for d in deliveries_of(c, run.id)] == [first.id]
    assert sum(len(m) for m in c.mailer.sent.values()) == 1


# "permanent -> no retry, owner alerted once per run"; bounced is not delivered ------------
def test_a_bounce_before_the_run_finishes_is_in_the_owner_alert(tmp_path):
    signer = EventSigner()
    c = make(tmp_path, SLOT, sendgrid_webhook_public_key=signer.public_key)
    clock = c.clock
    c.mailer.script["b@example.com"] = [DeliveryError("421 try later", permanent=False)]
    (run_id,) = tick(c).started
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.DELIVERING  # b waits for its retry
    a = next(d for d in deliveries_of(c, run_id) if d.recipient == "a@example.com")
    clock.advance(seconds=30)
    bounce = event("bounce", a, clock.now(), type="bounce", reason="550 5.1.1 mailbox unavailable")
    body, headers = signer.signed([bounce], int(clock.now().timestamp()))
    assert create_app(c).test_client().post("/webhooks/sendgrid", data=body, headers=headers).status_code == 200
    clock.set(SLOT + timedelta(minutes=2))  # b's retry: sent; the run now finishes
    drain(c)
    assert c.store.get_run(run_id).status == RunStatus.PARTIAL
    owner = [m for m in c.mailer.sent.get("cfo@example.com", [])]
    assert len(owner) == 1
    assert re.search(r"a@example\.com", owner[0].text), owner[0].text
    assert "b@example.com" not in owner[0].text
