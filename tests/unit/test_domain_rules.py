"""Pure domain rules, tested from what their docs promise (the module and function
docstrings, README, OWASP's SSRF cheat sheet), written after `make mutate` showed
mutants of them surviving the fast suites.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from herald.domain import ids, paths
from herald.domain.errors import StorageUnavailable
from herald.domain.reports import (
    REDACTED,
    DefinitionError,
    check_params,
    parse_definitions,
    parse_duration,
    redacted_definition,
    redacted_url,
    redacted_webhook,
)
from herald.domain.retry import RetryPolicy
from herald.domain.strict import strict_int
from herald.domain.targets import address_problem, host_problem, url_problem
from tests import factories


# Redaction: "without userinfo and with every query value replaced (${env:…} kept)" ----------
@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/r?token=abc&page=2", f"https://api.example.com/r?token={REDACTED}&page={REDACTED}"),
        ("https://bob:pw@api.example.com:8443/r", f"https://{REDACTED}@api.example.com:8443/r"),
        ("https://bob@api.example.com/r", f"https://{REDACTED}@api.example.com/r"),
        ("https://:pw@api.example.com/r", f"https://{REDACTED}@api.example.com/r"),
        ("https://api.example.com/r?key=${env:REPORTS_KEY}", "https://api.example.com/r?key=${env:REPORTS_KEY}"),
        ("https://api.example.com/r?empty=", f"https://api.example.com/r?empty={REDACTED}"),
        ("http://[2001:db8::1]:8080/r?a=1", f"http://[2001:db8::1]:8080/r?a={REDACTED}"),
        ("https://api.example.com/r#frag", "https://api.example.com/r"),
        ("https://api.example.com/plain", "https://api.example.com/plain"),
        ("https://api.example.com:99999/r", REDACTED),  # not a URL at all: nothing of it is shown
    ],
)
def test_redacted_url(url, shown):
    assert redacted_url(url) == shown


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", f"https://hooks.slack.com/{REDACTED}"),
        ("http://user:pw@hc.example/ping/uuid", f"http://hc.example/{REDACTED}"),
        ("https://hc-ping.com", f"https://hc-ping.com/{REDACTED}"),
        ("C0123456789", "C0123456789"),  # a channel id is not a secret
        ("#reporting-ops", "#reporting-ops"),
        ("ftp://files.example/x", "ftp://files.example/x"),
    ],
)
def test_redacted_webhook_shows_only_scheme_and_host(target, shown):
    assert redacted_webhook(target) == shown


def test_redacted_definition_hides_every_secret_and_keeps_the_rest():
    definition = factories.report(
        source={
            "type": "http",
            "url": "https://bi.example.com/export?api_key=s3cret&ref=${env:BI_REF}",
            "headers": {"Authorization": "Bearer s3cret", "X-Key": "${env:BI_KEY}"},
        },
        heartbeat_url="https://hc-ping.com/0b6e-uuid",
        recipients={"email": ["a@example.com"], "slack": ["C0123456789", "https://hooks.slack.com/services/T/B/X"]},
    )
    doc = redacted_definition(definition)
    assert doc["source"]["url"] == f"https://bi.example.com/export?api_key={REDACTED}&ref=${{env:BI_REF}}"
    assert doc["source"]["headers"] == {"Authorization": REDACTED, "X-Key": "${env:BI_KEY}"}
    assert doc["heartbeat_url"] == f"https://hc-ping.com/{REDACTED}"
    assert doc["recipients"] == {
        "email": ["a@example.com"],
        "slack": ["C0123456789", f"https://hooks.slack.com/{REDACTED}"],
    }
    assert "s3cret" not in repr(doc) and "0b6e-uuid" not in repr(doc)
    assert doc["id"] == "board-pack" and doc["owner"] == "cfo@example.com"  # the rest is as defined


def test_redacted_definition_of_a_pdf_report_without_heartbeat_is_the_definition():
    definition = factories.report()
    assert redacted_definition(definition) == definition.model_dump(mode="json")


# Outbound targets: OWASP SSRF cheat sheet, as the module docstring lists it -----------------
@pytest.mark.parametrize(
    ("address", "word"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::ffff:169.254.169.254", "metadata"),  # IPv4-mapped IPv6 is the same address
        ("169.254.10.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("[fe80::2]", "link-local"),
        ("0.0.0.0", "not routable"),
        ("::", "not routable"),
        ("224.0.0.1", "not routable"),
        ("240.0.0.1", "not routable"),
        ("255.255.255.255", "not routable"),
        ("example.com", "not an IP address"),
    ],
)
def test_never_reachable_addresses_even_when_private_ones_are_allowed(address, word):
    for allow_private in (True, False):
        problem = address_problem(address, allow_private)
        assert problem is not None and word in problem.replace("a routable", "routable").replace("not a ", "not ")


# ::1 once failed here: ipaddress counts it as reserved, and the reserved check came first.
PRIVATE = ["10.1.2.3", "172.16.0.1", "192.168.1.1", "127.0.0.1", "::1"]


@pytest.mark.parametrize("address", [*PRIVATE, "fd12::1", "100.64.0.1"])
def test_private_and_loopback_addresses_only_when_allowed(address):
    assert address_problem(address, allow_private=True) is None
    problem = address_problem(address, allow_private=False)
    assert problem is not None and "HERALD_ALLOW_PRIVATE_TARGETS" in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "100.128.0.1"])
def test_public_addresses_are_reachable(address):
    assert address_problem(address, allow_private=False) is None


@pytest.mark.parametrize(
    ("host", "allow_private", "word"),
    [
        ("", True, "no host"),
        ("metadata.google.internal", True, "metadata"),
        ("METADATA.Google.Internal.", True, "metadata"),
        ("metadata", True, "metadata"),
        ("instance-data", True, "metadata"),
        ("computeMetadata.metadata.google.internal", True, "metadata"),
        ("localhost", False, "loopback"),
        ("app.localhost", False, "loopback"),
        ("169.254.169.254", True, "metadata"),
        ("10.0.0.1", False, "private"),
    ],
)
def test_hosts_refused(host, allow_private, word):
    problem = host_problem(host, allow_private)
    assert problem is not None and word in problem


@pytest.mark.parametrize(
    ("host", "allow_private"),
    [("localhost", True), ("app.localhost", True), ("reports.example.com", False), ("10.0.0.1", True)],
)
def test_hosts_allowed(host, allow_private):
    assert host_problem(host, allow_private) is None


def test_url_problem():
    assert url_problem("https://reports.example.com/x") is None
    assert url_problem("HTTP://reports.example.com/x") is None
    assert url_problem("ftp://reports.example.com/x") == "scheme must be http or https"
    assert url_problem("http://hooks.example.com/x", schemes=("https",)) == "scheme must be https"
    assert url_problem("http://reports.example.com:99999/x") == "not a valid URL"
    assert url_problem("http:///x") == "the URL has no host"
    assert url_problem("http://10.0.0.1/x") is None  # definitions are validated with private allowed
    assert "private" in (url_problem("http://10.0.0.1/x", allow_private=False) or "")
    assert "metadata" in (url_problem("http://169.254.169.254/computeMetadata") or "")


# Event paths (domain/paths.py docstring) -----------------------------------------------------
EVENT = {
    "id": "e1",
    "type": "deal.closed",
    "data": {"account": {"id": "acc-1"}, "contacts": [{"email": "a@x"}, {"email": "b@x"}, {"name": "no mail"}]},
}


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("$.data.account.id", ["acc-1"]),
        ("data.account.id", ["acc-1"]),  # the leading $ is optional
        ("  $.id  ", ["e1"]),
        ("$.data.contacts[0].email", ["a@x"]),
        ("$.data.contacts[1].email", ["b@x"]),
        ("$.data.contacts[3].email", []),  # past the end: nothing
        ("$.data.contacts[*].email", ["a@x", "b@x"]),  # every item that has the field
        ("$.data.contacts[*]", EVENT["data"]["contacts"]),
        ("$.data.missing.field", []),
        ("$.data.account[0]", []),  # an index into an object: nothing
        ("$.data.account[*]", []),
        ("$.type.nested", []),  # a field of a string: nothing
        ("$.data.some_field-2", []),
    ],
)
def test_paths_resolve_as_documented(path, values):
    assert paths.resolve(paths.parse_path(path), EVENT) == values


@pytest.mark.parametrize("path", ["$", "", "$.", "$.data..x", "$.data[x]", "$.data[-1]", "$.da ta", "$data"])
def test_invalid_paths_are_refused(path):
    with pytest.raises(ValueError, match="path"):
        paths.parse_path(path)


def test_parse_path_parts():
    assert paths.parse_path("$.data.contacts[*].email") == ("data", "contacts", paths.WILDCARD, "email")
    assert paths.parse_path("$.data.contacts[12]") == ("data", "contacts", 12)
    assert paths.has_wildcard(paths.parse_path("$.a[*]")) and not paths.has_wildcard(paths.parse_path("$.a[0]"))
    assert paths.is_path("$.data.x") and not paths.is_path("literal")


# Deterministic ids (ARCHITECTURE decision 2): stable for the same subject, distinct otherwise --
SLOT = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def test_run_ids_differ_by_every_part_of_their_subject():
    assert ids.event_run_id("r", "crm", "e1") == ids.event_run_id("r", "crm", "e1")
    variants = {
        ids.event_run_id("r", "crm", "e1"),
        ids.event_run_id("r2", "crm", "e1"),
        ids.event_run_id("r", "erp", "e1"),
        ids.event_run_id("r", "crm", "e2"),
        ids.scheduled_run_id("r", SLOT),
        ids.scheduled_run_id("r", SLOT + timedelta(minutes=1)),
        ids.scheduled_run_id("r2", SLOT),
        ids.manual_run_id("r", "e1"),
        ids.manual_run_id("r2", "e1"),
    }
    assert len(variants) == 9
    # Parts are separated, not concatenated: ("ab", "c") is not ("a", "bc").
    assert ids.event_run_id("r", "ab", "c") != ids.event_run_id("r", "a", "bc")
    assert all(v.startswith("r") and len(v) == 25 for v in variants)


def test_task_names_and_notification_ids():
    assert ids.task_name("send", "d1", 0) == ids.task_name("send", "d1")
    assert len({ids.task_name("send", "d1", 0), ids.task_name("send", "d1", 1), ids.task_name("execute", "d1", 0)}) == 3
    assert ids.task_name("send", "d1").startswith("send-") and len(ids.task_name("send", "d1")) == len("send-") + 32
    beat = ids.heartbeat_id("start", "r1")
    assert beat.startswith("h") and beat != ids.heartbeat_id("success", "r1") != ids.heartbeat_id("start", "r2")
    # Pings live apart from the alerts people read.
    assert ids.notification_collection(ids.alert_id("x")) == "alerts"
    assert ids.notification_collection(beat) not in ("alerts", "")
    assert ids.alert_id("a", "b") != ids.alert_id("a", "c") and ids.alert_id("a").startswith("a")


# Small parsers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("90s", timedelta(seconds=90)),
        ("20m", timedelta(minutes=20)),
        ("2h", timedelta(hours=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1d", timedelta(days=1)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ],
)
def test_durations_from_the_readme(text, span):
    assert parse_duration(text) == span


@pytest.mark.parametrize("text", ["", "0s", "2 h", "h", "1w", "32d", "-1h"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("42", 42), ("1700000000", 1700000000)])
def test_strict_int_takes_plain_digits(text, value):
    assert strict_int(text) == value


@pytest.mark.parametrize("text", ["", " 1", "1 ", "+1", "-1", "1.0", "١٢", "0x10", "1_000"])
def test_strict_int_refuses_anything_else(text):
    assert strict_int(text) is None


def test_check_params_refuses_control_characters_and_long_values():
    check_params({"ledger": "GL", "empty": ""})
    with pytest.raises(ValueError, match="ledger"):
        check_params({"ledger": "GL\nBcc: x@y"})
    with pytest.raises(ValueError, match="big"):
        check_params({"big": "x" * 501})
    check_params({"ok": "x" * 500})
    with pytest.raises(ValueError):
        check_params({"small": "x" * 11}, max_chars=10)


def test_definition_errors_name_the_report_and_the_field():
    with pytest.raises(DefinitionError) as caught:
        parse_definitions(
            {"reports": [{"id": "board-pack", "name": "B", "owner": "cfo@example.com", "period": "weekly"}]}
        )
    problems = caught.value.problems
    assert problems and all(line.startswith("report 'board-pack'") for line in problems)
    assert any("period" in line for line in problems)
    assert str(caught.value) == "\n".join(problems)


def test_a_storage_error_keeps_its_message_and_a_retry_hint():
    error = StorageUnavailable("/data/herald.db: the file is corrupt")
    assert str(error) == error.message == "/data/herald.db: the file is corrupt"
    assert error.retry_after == 30.0  # the 503's Retry-After when nothing says otherwise
    assert StorageUnavailable("disk full", retry_after=5).retry_after == 5


def test_strict_int_bounds_are_inclusive():
    assert strict_int("5", minimum=5, maximum=5) == 5
    assert strict_int("4", minimum=5) is None and strict_int("6", maximum=5) is None
    assert strict_int(None) is None


# Retry policy: "retry after 2, 8, 32 minutes (3 retries)"; a provider hint only lengthens --------
def test_the_delay_is_the_configured_one_unless_the_provider_asks_for_longer():
    policy = RetryPolicy(delays=(0.0, 480.0, 1920.0), max_retries=3)
    assert policy.delay_after(1) == timedelta(0)  # no hint: exactly the configured delay
    assert policy.delay_after(1, retry_after=30.0) == timedelta(seconds=30)
    assert policy.delay_after(2, retry_after=30.0) == timedelta(minutes=8)
    assert policy.delay_after(4) is None
    with pytest.raises(ValueError, match="counted from 1"):
        policy.delay_after(0)


# Ids are stored: they must not change from one release to the next, or a tick, event or
# task redelivered across a deploy would create its run or delivery a second time.
@pytest.mark.parametrize(
    ("made", "pinned"),
    [
        (lambda: ids.scheduled_run_id("board-pack", SLOT), "r3899f5ec109758d8c8cd531c"),
        (lambda: ids.event_run_id("deal-pack", "crm", "evt-7"), "rcdd86477f9e2dfa4fa23fdbe"),
        (lambda: ids.manual_run_id("board-pack", "key-1"), "rc56a5ee24bd0a90403738834"),
        (lambda: ids.delivery_id("r1", "email", "A@Example.com"), "dec8c7fec32023d1e8c71c5b7"),
        (lambda: ids.delivery_id("r1", "email", "a@example.com"), "dec8c7fec32023d1e8c71c5b7"),
        (lambda: ids.task_name("send", "d1", 2), "send-f06f24475b8b63d8382bcf3b2b91d931"),
        (lambda: ids.heartbeat_id("start", "r1"), "h6faae918aedbb3172c56b167"),
        (lambda: ids.alert_id("watchdog", "late", "board-pack"), "a7f4ee644d9545566017b061f"),
    ],
)
def test_ids_are_stable_across_releases(made, pinned):
    assert made() == pinned


# Records as stored documents -----------------------------------------------------------------
def test_a_record_is_stored_as_plain_json():
    from herald.domain.records import Delivery, now_fields

    d = Delivery(
        id="d1", run_id="r1", report_id="board-pack", channel="email", recipient="a@example.com", **now_fields(SLOT)
    )
    doc = d.to_doc()
    assert json.loads(json.dumps(doc)) == doc  # nothing but JSON types
    assert datetime.fromisoformat(doc["created_at"]) == SLOT == datetime.fromisoformat(doc["updated_at"])
    assert Delivery.model_validate(doc) == d


def test_the_attempt_log_keeps_when_what_and_why_capped():
    from herald.domain.records import MAX_ATTEMPT_LOG, Delivery, now_fields

    d = Delivery(
        id="d1", run_id="r1", report_id="board-pack", channel="email", recipient="a@example.com", **now_fields(SLOT)
    )
    assert d.log_attempt(SLOT, "sent") == [{"at": SLOT.isoformat(), "result": "sent"}]  # no error, no error key
    (entry,) = d.log_attempt(SLOT, "failed", "x" * 1000)
    assert entry == {"at": SLOT.isoformat(), "result": "failed", "error": "x" * 300}
    for n in range(MAX_ATTEMPT_LOG + 5):
        d = d.model_copy(update={"attempt_log": d.log_attempt(SLOT + timedelta(minutes=n), f"try {n}")})
    assert len(d.attempt_log) == MAX_ATTEMPT_LOG and d.attempt_log[-1]["result"] == f"try {MAX_ATTEMPT_LOG + 4}"


def test_a_delivery_error_is_known_to_have_failed_unless_said_otherwise():
    from herald.domain.errors import DeliveryError

    error = DeliveryError("550 no such user", permanent=True)
    assert str(error) == "550 no such user" and error.unknown is False and error.retry_after is None
    assert repr(error) == "DeliveryError('550 no such user', permanent)"
    assert repr(DeliveryError("421", permanent=False)) == "DeliveryError('421', transient)"


def test_same_secret_compares_text_and_bytes():
    from herald.domain.strict import same_secret

    assert same_secret("s3cret", "s3cret") and same_secret(b"s3cret", b"s3cret") and same_secret("s3cret", b"s3cret")
    assert not same_secret("s3cre", "s3cret") and not same_secret(b"", "s3cret")
    assert not same_secret("tökén", "tökén")  # supplied non-ASCII never matches (and never raises)


# State machines: README edges (the tables themselves are tested by behaviour in test_states.py)
def test_refused_transitions_name_both_states():
    from herald.domain.errors import InvalidTransition
    from herald.domain.states import DeliveryStatus, RunStatus, check_delivery, check_run

    check_run(RunStatus.PENDING, RunStatus.RENDERING)
    check_delivery(DeliveryStatus.FAILED, DeliveryStatus.QUEUED)  # resend to failed
    with pytest.raises(InvalidTransition, match="run cannot go from succeeded to delivering"):
        check_run(RunStatus.SUCCEEDED, RunStatus.DELIVERING)
    with pytest.raises(InvalidTransition, match="delivery cannot go from bounced to delivered"):
        check_delivery(DeliveryStatus.BOUNCED, DeliveryStatus.DELIVERED)


# Definitions: "validated as a whole … errors name the report and the field" (README) -------
def test_every_report_is_checked_and_named_even_without_an_id():
    with pytest.raises(DefinitionError) as caught:
        parse_definitions({"reports": [{"name": "no id"}, "not a mapping", {"id": "x-1", "owner": "nobody"}]})
    problems = caught.value.problems
    assert any(p.startswith("report #1:") for p in problems)
    assert any(p.startswith("report #2:") for p in problems)  # the loop goes on past a bad report
    assert any(p.startswith("report 'x-1':") for p in problems)
    assert all(": (report): " not in p or p.startswith("report #2") for p in problems)


def test_a_document_without_a_reports_list_is_one_problem():
    for document in ([], {"report": []}, {"reports": {}}, None):
        with pytest.raises(DefinitionError) as caught:
            parse_definitions(document)
        assert caught.value.problems == ["the file must be a mapping with a 'reports' list"]


def test_durations_up_to_31_days():
    assert parse_duration("31d") == timedelta(days=31)
    with pytest.raises(ValueError, match="at most 31 days"):
        parse_duration("31d1s")
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("2 hours")


def test_bad_parameter_names_are_named():
    with pytest.raises(ValueError, match="parameter name 'bad name!'"):
        check_params({"bad name!": "x"})
    with pytest.raises(ValueError, match=r"longer than 10 characters"):
        check_params({"small": "x" * 11}, max_chars=10)


def test_a_trigger_with_one_recipient_path():
    from herald.domain.reports import EventTrigger

    trigger = EventTrigger.model_validate({"source": "crm", "event": "deal.closed", "recipients": "$.data.email"})
    assert trigger.recipient_paths() == ["$.data.email"]
    many = EventTrigger.model_validate({"source": "crm", "event": "x", "recipients": ["$.data.a", "$.data.b"]})
    assert many.recipient_paths() == ["$.data.a", "$.data.b"]


@pytest.mark.parametrize(
    ("url", "word"),
    [("http://169.254.169.254/latest", "URL not allowed: 169.254.169.254 is a cloud metadata"),
     ("http://reports.example.com/x\r\nHost: evil", "URL contains control characters")],
)  # fmt: skip
def test_an_http_source_may_not_point_at_metadata_or_carry_control_characters(url, word):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=word):
        factories.report(source={"type": "http", "url": url})


# Periods: README "period: day | week | month | previous_day | previous_month", in the report's zone
@pytest.mark.parametrize(
    ("kind", "label"),
    [
        ("day", "2026-11-30"),  # 23:30 UTC on the 29th is already the 30th in Sydney
        ("previous_day", "2026-11-29"),
        ("week", "2026-W49"),  # ISO week of Monday 30 November 2026
        ("month", "2026-11"),
        ("previous_month", "2026-10"),
    ],
)
def test_period_labels_are_taken_in_the_reports_zone(kind, label):
    from herald.domain.periods import period_label

    assert period_label(kind, datetime(2026, 11, 29, 23, 30, tzinfo=UTC), "Australia/Sydney") == label


def test_previous_month_across_a_year_and_iso_weeks_across_one():
    from herald.domain.periods import period_label

    assert period_label("previous_month", datetime(2027, 1, 1, 12, tzinfo=UTC), "UTC") == "2026-12"
    assert period_label("week", datetime(2027, 1, 1, 12, tzinfo=UTC), "UTC") == "2026-W53"  # ISO year 2026
    assert period_label("week", datetime(2026, 1, 5, 12, tzinfo=UTC), "UTC") == "2026-W02"


def test_a_duplicate_id_does_not_stop_the_other_reports_being_checked():
    good = factories.report(id="a-1").model_dump(mode="json")
    with pytest.raises(DefinitionError) as caught:
        parse_definitions({"reports": [good, dict(good), {"id": "b-1", "name": "B", "owner": "nobody"}]})
    problems = caught.value.problems
    assert "report 'a-1': id: duplicate report id" in problems
    assert any(p.startswith("report 'b-1': owner") for p in problems)


def test_a_report_that_is_not_a_mapping_is_named_by_position():
    with pytest.raises(DefinitionError) as caught:
        parse_definitions({"reports": ["not a mapping"]})
    assert caught.value.problems[0].startswith("report #1: (report): ")


def test_summaries_carry_the_row_count_and_recipients_their_channel():
    from herald.domain.reports import render_summary

    text = render_summary("{name}: {rows} rows for {period} {params[x]}", name="N", period="P", rows=3, params={})
    assert text == "N: 3 rows for P "
    report = factories.report(recipients={"email": ["a@example.com"], "slack": ["C0123456789"]})
    assert report.recipients.targets() == [("email", "a@example.com"), ("slack", "C0123456789")]


def test_format_control_characters_become_spaces():
    from herald.domain.strict import has_control, without_control

    for mark in ("\u202e", "\u200b", "\u2066"):  # bidi override, zero-width space, isolate: format (Cf)
        assert has_control(f"a{mark}b") and without_control(f"a{mark}b") == "a b"
    assert without_control("line\r\nbreak", limit=6) == "line  "
    assert without_control("plain é") == "plain é" and not has_control("plain é")


def test_redaction_edges():
    assert redacted_url("https:///r?x=1") == f"https:///r?x={REDACTED}"  # no host: none invented
    assert redacted_webhook("https://a@b@hc.example/ping/x") == f"https://hc.example/{REDACTED}"
    nested = "https://hc.example/ping/x?next=https://other.example/y"
    assert redacted_webhook(nested) == f"https://hc.example/{REDACTED}"


def test_exact_messages_people_read():
    assert host_problem("", True) == "the URL has no host"
    assert host_problem("[fe80::1]", True) == "fe80::1 is link-local"  # a bracketed literal is still judged
    assert host_problem("localhostx", False) is None  # a name, not localhost
    with pytest.raises(ValueError) as caught:
        RetryPolicy().delay_after(0)
    assert str(caught.value) == "attempts are counted from 1"
    from herald.domain.reports import Schedule
    from herald.domain.schedules import next_fire_time

    with pytest.raises(ValueError) as naive:
        next_fire_time(Schedule(cron="0 7 * * *", timezone="Europe/London"), datetime(2026, 11, 2, 7, 0))
    assert str(naive.value) == "after must be timezone-aware"
