"""parse_push_envelope: a pure function, tested with a table."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from herald.web.push_envelope import EnvelopeError, parse_push_envelope

SUB = "projects/herald-test/subscriptions/herald-events"


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def envelope(data: Any = None, **message: Any) -> bytes:
    body = {
        "message": {
            "data": b64(json.dumps({"type": "etl.completed", "period": "2024-03"}).encode()) if data is None else data,
            "attributes": {"source": "warehouse"},
            "messageId": "136969346945",
            "message_id": "136969346945",
            "publishTime": "2024-03-31T23:59:58.123456789Z",
            "publish_time": "2024-03-31T23:59:58.123456789Z",
        },
        "subscription": SUB,
    }
    body["message"].update(message)
    body["message"] = {k: v for k, v in body["message"].items() if v is not None}
    return json.dumps(body).encode()


def test_a_valid_envelope() -> None:
    message = parse_push_envelope(envelope())
    assert message.message_id == "136969346945"
    assert message.data == {"type": "etl.completed", "period": "2024-03"}
    assert message.attributes == {"source": "warehouse"}
    assert message.subscription == SUB
    assert message.publish_time == datetime(2024, 3, 31, 23, 59, 58, 123456, tzinfo=UTC)
    assert message.delivery_attempt is None


@pytest.mark.parametrize(
    ("case", "overrides", "expected"),
    [
        ("only snake_case id", {"messageId": None}, "136969346945"),
        ("no attributes", {"attributes": None}, "136969346945"),
        ("no publish time", {"publishTime": None, "publish_time": None}, "136969346945"),
    ],
)
def test_tolerated_variants(case: str, overrides: dict[str, Any], expected: str) -> None:
    assert parse_push_envelope(envelope(**overrides)).message_id == expected, case


@pytest.mark.parametrize(
    ("published", "expected"),
    [
        ("2014-10-02T15:01:23Z", datetime(2014, 10, 2, 15, 1, 23, tzinfo=UTC)),
        ("2014-10-02T15:01:23.045Z", datetime(2014, 10, 2, 15, 1, 23, 45000, tzinfo=UTC)),
        ("2014-10-02T17:01:23.5+02:00", datetime(2014, 10, 2, 15, 1, 23, 500000, tzinfo=UTC)),
    ],
)
def test_publish_time_formats(published: str, expected: datetime) -> None:
    body = envelope(publishTime=published, publish_time=published)
    assert parse_push_envelope(body).publish_time == expected


def test_delivery_attempt_is_read_when_present() -> None:
    body = json.loads(envelope())
    body["deliveryAttempt"] = 3
    assert parse_push_envelope(json.dumps(body).encode()).delivery_attempt == 3


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("empty body", b""),
        ("not JSON", b"{not json"),
        ("not UTF-8", b"\xff\xfe\x00"),
        ("JSON array", b"[]"),
        ("no message", json.dumps({"subscription": SUB}).encode()),
        ("message not an object", json.dumps({"message": "hi", "subscription": SUB}).encode()),
        ("no id", envelope(messageId=None, message_id=None)),
        ("empty id", envelope(messageId="", message_id="")),
        ("no data", envelope(data="")),
        ("data not a string", envelope(data=123)),
        ("bad base64", envelope(data="@@not base64@@")),
        ("truncated base64", envelope(data="eyJhIjox")),
        ("data not JSON", envelope(data=b64(b"plain text"))),
        ("data not UTF-8", envelope(data=b64(b"\xff\xfe"))),
        ("data a JSON list", envelope(data=b64(b"[1, 2]"))),
        ("data a JSON string", envelope(data=b64(b'"x"'))),
        ("attributes not a map", envelope(attributes=["a"])),
        ("attribute not a string", envelope(attributes={"n": 1})),
        ("bad publish time", envelope(publishTime="yesterday", publish_time=None)),
        ("impossible publish time", envelope(publishTime="2024-02-30T00:00:00Z")),
        ("subscription not a string", json.dumps({**json.loads(envelope()), "subscription": 5}).encode()),
        ("deliveryAttempt not an int", json.dumps({**json.loads(envelope()), "deliveryAttempt": "2"}).encode()),
    ],
)
def test_malformed_envelopes_are_refused(case: str, body: bytes) -> None:
    with pytest.raises(EnvelopeError):
        parse_push_envelope(body)
