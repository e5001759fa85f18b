"""services/triggers.py without the web doors: an event ``{id, type, data}`` starts one run
per matching report, idempotent by (source, event id) — a repeat answers the first run ids,
the same id with other content is refused (422) — with parameters and extra e-mail
recipients taken from the payload (README "Report definitions", triggers.py's docstring)."""

from __future__ import annotations

import hashlib
import json
import logging

import pytest

from herald.domain.states import RunStatus
from herald.ports.clock import FakeClock
from herald.services import triggers as tr
from herald.services.scheduling import apply_definitions
from tests import factories

TRIGGER = {
    "source": "erp",
    "event": "period.closed",
    "conditions": {"$.data.ledger": "GL"},
    "params": {"ledger": "$.data.ledger", "kind": "monthly"},
    "recipients": "$.data.contacts[*].email",
}


def event(event_id="e1", **data):
    return {"id": event_id, "type": "period.closed", "data": {"ledger": "GL", **data}}


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path, FakeClock(factories.T0))
    apply_definitions(container, [factories.report(triggers=[TRIGGER])])
    return container


def test_a_matching_event_starts_one_run_with_its_params_and_recipients(c):
    contacts = [
        {"email": "x@example.com"},
        {"email": "X@Example.com"},
        {"email": "not-mail"},
        {"email": "y@example.com"},
    ]
    result = tr.ingest(c, "erp", event(contacts=contacts))
    assert result.event_id == "e1" and not result.replayed and len(result.run_ids) == 1
    run = c.store.get_run(result.run_ids[0])
    assert run.trigger == "event" and run.status == RunStatus.PENDING and run.report_id == "board-pack"
    assert run.params == {"ledger": "GL", "kind": "monthly"}
    assert run.extra_recipients == ["x@example.com", "y@example.com"]  # the same address once, bad ones left out
    doc = c.store.get_inbound_event("trigger:erp", "e1")
    assert doc == {
        "digest": tr.event_digest(event(contacts=contacts)),
        "type": "period.closed",
        "run_ids": result.run_ids,
        "received_at": factories.T0.isoformat(),
    }
    assert tr.ingest_event(c, "erp", event(contacts=contacts)) == result.run_ids


def test_the_digest_is_sha256_of_canonical_json():
    e = {"b": [1, {"y": 2, "x": 1}], "a": "é"}
    canonical = '{"a":"\\u00e9","b":[1,{"x":1,"y":2}]}'
    assert tr.event_digest(e) == hashlib.sha256(canonical.encode()).hexdigest()
    assert tr.event_digest({"a": 1, "b": 2}) == tr.event_digest({"b": 2, "a": 1})


def test_a_repeat_answers_the_first_runs_and_other_content_is_refused(c, caplog):
    first = tr.ingest(c, "erp", event())
    with caplog.at_level(logging.INFO, logger="herald.services.triggers"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        again = tr.ingest(c, "erp", event())
    assert again == tr.Ingested("e1", first.run_ids, replayed=True)
    assert [r.getMessage() for r in caplog.records if r.name == "herald.services.triggers"] == ["event received again"]
    (line,) = [r for r in caplog.records if r.name == "herald.services.triggers"]
    assert (line.source, line.event_id) == ("erp", "e1")  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="herald.services.triggers"), pytest.raises(tr.EventConflict) as info:
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        tr.ingest(c, "erp", event(ledger="AP"))
    assert str(info.value) == "event 'e1' from 'erp' was received before with different content"
    assert info.value.status == 422
    (warning,) = [r for r in caplog.records if r.name == "herald.services.triggers"]
    assert warning.getMessage() == "event id reused with other content"
    assert (warning.source, warning.event_id) == ("erp", "e1")  # type: ignore[attr-defined]
    assert len(c.store.list_runs().items) == 1


def test_the_same_event_id_from_another_source_is_another_event(c):
    apply_definitions(c, [factories.report(id="crm-report", triggers=[{**TRIGGER, "source": "crm"}])])
    erp = tr.ingest(c, "erp", event())
    crm = tr.ingest(c, "crm", event())
    assert not crm.replayed and crm.run_ids != erp.run_ids
    assert [c.store.get_run(r).report_id for r in crm.run_ids] == ["crm-report"]


def test_a_digest_given_by_the_door_is_the_one_kept(c):
    tr.ingest(c, "erp", event(), digest="raw-bytes-digest")
    assert c.store.get_inbound_event("trigger:erp", "e1")["digest"] == "raw-bytes-digest"
    assert tr.ingest(c, "erp", event(), digest="raw-bytes-digest").replayed
    with pytest.raises(tr.EventConflict):
        tr.ingest(c, "erp", event())  # its canonical digest is another


def test_an_event_that_no_report_matches_is_kept_with_no_runs(c, caplog):
    with caplog.at_level(logging.INFO, logger="herald.services.triggers"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        result = tr.ingest(c, "erp", {"id": "e9", "type": "period.opened"})
    assert result.run_ids == [] and not result.replayed
    (line,) = [r for r in caplog.records if r.name == "herald.services.triggers"]
    assert line.getMessage() == "event ingested"
    assert (line.source, line.event_id, line.event_type, line.runs) == ("erp", "e9", "period.opened", 0)  # type: ignore[attr-defined]
    assert tr.ingest(c, "erp", {"id": "e9", "type": "period.opened"}).replayed


def test_a_concurrent_first_delivery_wins_and_this_one_answers_its_runs(c, monkeypatch):
    winner = {"digest": tr.event_digest(event()), "type": "period.closed", "run_ids": ["winner-run"]}
    monkeypatch.setattr(c.store, "put_inbound_event", lambda *a, **k: False)
    monkeypatch.setattr(c.store, "get_inbound_event", lambda kind, eid: None)
    lost = tr.ingest(c, "erp", event())
    assert lost.replayed and lost.event_id == "e1" and len(lost.run_ids) == 1  # its own doc: the record vanished
    answers = iter([None, winner])  # not there when first read; the winner's when read again
    monkeypatch.setattr(c.store, "get_inbound_event", lambda kind, eid: next(answers))
    assert tr.ingest(c, "erp", event()) == tr.Ingested("e1", ["winner-run"], replayed=True)


def test_a_concurrent_first_delivery_with_other_content_is_refused_as_a_conflict(c, monkeypatch, caplog):
    other = {"digest": tr.event_digest(event(ledger="AP")), "type": "period.closed", "run_ids": ["winner-run"]}
    answers = iter([None, other])  # not there when first read; the winner's (other content) when read again
    monkeypatch.setattr(c.store, "put_inbound_event", lambda *a, **k: False)
    monkeypatch.setattr(c.store, "get_inbound_event", lambda kind, eid: next(answers))
    with caplog.at_level(logging.WARNING, logger="herald.services.triggers"), pytest.raises(tr.EventConflict) as info:
        tr.ingest(c, "erp", event())
    assert str(info.value) == "event 'e1' from 'erp' was received before with different content"
    (line,) = [r for r in caplog.records if r.getMessage() == "event id reused with other content"]
    assert (line.source, line.event_id) == ("erp", "e1")  # type: ignore[attr-defined]


@pytest.mark.parametrize("payload", [[1, 2], "text", None, 42])
def test_an_event_must_be_a_json_object(c, payload):
    with pytest.raises(tr.InvalidEvent) as info:
        tr.ingest(c, "erp", payload)
    assert str(info.value) == "an event is a JSON object {id, type, data}" and info.value.status == 400


def test_an_invalid_event_names_every_problem(c):
    with pytest.raises(tr.InvalidEvent) as info:
        tr.ingest(c, "erp", {"id": "has space", "data": []})
    message = str(info.value)
    assert message.startswith("invalid event: ")
    problems = message.removeprefix("invalid event: ").split("; ")
    assert [p.split(":")[0] for p in problems] == ["id", "type", "data"]
    assert problems[1] == "type: Field required"


def test_conditions_all_hold_and_a_list_means_any_of(c):
    trigger = {**TRIGGER, "conditions": {"$.data.ledger": ["GL", "AP"], "$.data.final": True}}
    apply_definitions(c, [factories.report(triggers=[trigger])])
    assert tr.ingest(c, "erp", event("a", ledger="AP", final=True)).run_ids
    assert tr.ingest(c, "erp", event("b", ledger="AR", final=True)).run_ids == []
    assert tr.ingest(c, "erp", event("c", ledger="GL", final=1)).run_ids == []  # true is not 1
    assert tr.ingest(c, "erp", event("d", ledger="GL")).run_ids == []  # missing: does not hold


def test_one_is_not_true_either_way():
    assert tr._same(1, 1) and tr._same(True, True)
    assert not tr._same(True, 1) and not tr._same(1, True) and not tr._same(0, False)
    assert not tr._same("GL", "AP")


def test_source_type_and_conditions_must_all_match(c):
    report = factories.report(triggers=[TRIGGER])
    assert tr.matching_trigger(report, "erp", event()) is not None
    assert tr.matching_trigger(report, "crm", event()) is None
    assert tr.matching_trigger(report, "erp", {**event(), "type": "other"}) is None
    assert tr.matching_trigger(report, "erp", event(ledger="AP")) is None
    assert tr.matching_trigger(factories.report(triggers=[TRIGGER], enabled=False), "erp", event()) is None


def test_the_first_matching_trigger_of_a_report_decides(c):
    second = {**TRIGGER, "conditions": {}, "params": {"kind": "fallback"}}
    report = factories.report(triggers=[TRIGGER, second])
    assert tr.matching_trigger(report, "erp", event()).params == TRIGGER["params"]
    assert tr.matching_trigger(report, "erp", event(ledger="AP")).params == {"kind": "fallback"}


def test_a_mapped_parameter_must_be_a_non_empty_text_or_number(c):
    trigger = {**TRIGGER, "conditions": {}, "params": {"amount": "$.data.amount", "ok": "$.data.ok"}}
    apply_definitions(c, [factories.report(triggers=[trigger])])
    run_id = tr.ingest(c, "erp", event("n", amount=12.5, ok=False)).run_ids[0]
    assert c.store.get_run(run_id).params == {"amount": "12.5", "ok": "false"}
    for i, bad in enumerate(({"amount": ""}, {"amount": {"x": 1}}, {"amount": [1]}, {})):
        with pytest.raises(tr.UnusableEvent) as info:
            tr.ingest(c, "erp", event(f"bad{i}", ok=True, **bad))
        assert str(info.value) == (
            "report 'board-pack' needs $.data.amount (a text or number) for its parameter 'amount'"
        )
        assert info.value.status == 422


def test_parameters_are_held_to_the_apis_limits(tmp_path):
    c = factories.container(tmp_path, FakeClock(factories.T0), max_param_chars=5)
    trigger = {**TRIGGER, "params": {"ledger": "$.data.ledger"}, "conditions": {}}
    apply_definitions(c, [factories.report(triggers=[trigger])])
    with pytest.raises(tr.UnusableEvent) as info:
        tr.ingest(c, "erp", event(ledger="GENERAL"))
    assert str(info.value).startswith("report 'board-pack': ")
    assert c.store.list_runs().items == []


def test_bad_recipients_are_logged_and_skipped(c, caplog):
    with caplog.at_level(logging.WARNING, logger="herald.services.triggers"):
        caplog.clear()  # only what this block logs (an earlier test may have set the level lower)
        run_id = tr.ingest(c, "erp", event(contacts=[{"email": "nope"}, {"email": "z@example.com"}])).run_ids[0]
    assert c.store.get_run(run_id).extra_recipients == ["z@example.com"]
    (line,) = [r for r in caplog.records if r.name == "herald.services.triggers"]
    assert line.getMessage() == "event recipient ignored: not an e-mail address"
    assert (line.report_id, line.event_id, line.path) == ("board-pack", "e1", "$.data.contacts[*].email")  # type: ignore[attr-defined]


def test_at_most_five_hundred_recipients_per_event(c):
    contacts = [{"email": f"u{i}@example.com"} for i in range(tr.MAX_EVENT_RECIPIENTS)]
    run_id = tr.ingest(c, "erp", event("ok", contacts=contacts)).run_ids[0]
    assert len(c.store.get_run(run_id).extra_recipients) == 500
    with pytest.raises(tr.UnusableEvent) as info:
        tr.ingest(c, "erp", event("too-many", contacts=[*contacts, {"email": "one@more.com"}]))
    assert str(info.value) == "report 'board-pack': more than 500 recipients in one event"


def test_record_job_status_from_pubsub_is_marked_so(c):
    record, created = tr.record_job_status(c, {"job": "etl", "period": "2026-11-02", "status": "succeeded"})
    assert created and record["via"] == "pubsub"
    assert tr.record_job_status(c, {"job": "etl", "period": "2026-11-02", "status": "succeeded"}, via="x")[1] is False
    assert json.dumps(record)  # plain JSON
