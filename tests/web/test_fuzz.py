"""Fuzz every route (issue 11): at least 10,000 generated requests across every rule in
``app.url_map``, with and without credentials, must never answer 5xx or show a traceback.

Two apps over seeded data: ``open`` is `herald serve` on loopback with no tokens (every
route reachable, so the fuzz gets past auth into the handlers); ``closed`` has API and
admin tokens, and each request carries one kind of credential: none, the right one, a
wrong one, a non-ASCII one, the in-process internal header, an admin session, or a
correctly signed webhook (business event HMAC, SendGrid ECDSA). Bodies are JSON (random
and route-shaped), raw bytes, deep nesting, forms; headers and query values include
Latin-1 oddities such as "²". Totals by status code go to ``var/fuzz-totals.json`` (or
$HERALD_FUZZ_REPORT) and the terminal summary.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from herald.web.auth import INTERNAL_HEADER, internal_token
from herald.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from tests import factories
from tests.browser import seed
from tests.support.sendgrid_events import EventSigner
from tests.web.serving import served_on_loopback

ROOT = Path(__file__).resolve().parents[2]
REPORT_FILE = Path(os.environ.get("HERALD_FUZZ_REPORT", ROOT / "var" / "fuzz-totals.json"))
EXAMPLES_PER_APP = 5_200  # two apps: > 10,000 requests in all
MIN_REQUESTS = 10_000
API_TOKEN, ADMIN_TOKEN, EVENT_SECRET = "fuzz-api-token", "fuzz-admin-token", "fuzz-event-secret"

TOTALS: Counter[str] = Counter()
BY_APP: dict[str, Counter[str]] = {"open": Counter(), "closed": Counter()}
RULES_HIT: dict[str, set[str]] = {"open": set(), "closed": set()}
RULES_ALL: dict[str, set[str]] = {}

SIGNER = EventSigner()

# --- values --------------------------------------------------------------------------------
latin1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
odd_numbers = st.sampled_from(["²", "٣", "-1", "0", "1", "50", "1e3", "99999999999999999999", "", " 7", "0x10"])
short = st.one_of(latin1, odd_numbers, st.text(max_size=30))
header_text = st.one_of(latin1, odd_numbers)  # what an HTTP server can hand over: no CR/LF
ids = st.sampled_from(["board-pack", "r-new", "r-old", "nope", "", "x" * 300, "..", "%2e%2e", "erp", "*"])
path_values = st.one_of(ids, short, st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=80))
QUERY_KEYS = ["limit", "cursor", "status", "recipient", "scope", "expires", "filename", "sig", "run", "report"]
QUERY_KEYS += ["report_id", "run_id", "next"]
queries = st.dictionaries(st.sampled_from(QUERY_KEYS), st.one_of(short, ids), max_size=4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=15,
)
shaped = st.one_of(
    st.fixed_dictionaries({"params": st.dictionaries(st.text(max_size=70), st.text(max_size=70), max_size=3)}),
    st.fixed_dictionaries(
        {"job": st.one_of(st.just("warehouse-etl"), short), "period": st.one_of(st.just("2026-11"), short)},
        optional={"status": st.one_of(st.just("succeeded"), short), "completed_at": short, "details": json_values},
    ),
    st.fixed_dictionaries(
        {"id": short, "type": st.one_of(st.just("period.closed"), short)}, optional={"data": json_values}
    ),
    st.fixed_dictionaries({"run_id": st.one_of(ids, short)}, optional={"delivery_id": short, "attempt": json_values}),
    st.lists(
        st.fixed_dictionaries(
            {"event": st.sampled_from(["delivered", "bounce", "open", "click", "weird"]), "sg_event_id": short},
            optional={"email": short, "timestamp": json_values, "delivery_id": short, "reason": short},
        ),
        max_size=3,
    ),
)


# Well-formed bodies, so the fuzz also reaches the handlers' happy paths.
VALID = [
    {},
    {"params": {"region": "EU"}},
    {"job": "warehouse-etl", "period": "2026-11-02", "status": "succeeded"},
    {"id": "ev-1", "type": "period.closed", "data": {"ledger": "GL"}},
    [{"event": "delivered", "sg_event_id": "e1", "email": "ann@example.com", "timestamp": 1793000000}],
]
shaped = st.one_of(shaped, st.sampled_from(VALID))


def _pubsub(data: Any) -> dict[str, Any]:
    raw = base64.b64encode(json.dumps(data).encode()).decode()
    return {"message": {"data": raw, "messageId": "m1", "attributes": {"source": "erp"}}, "subscription": "s"}


VALID_BODIES = [
    *[("json", json.dumps(v).encode()) for v in VALID],
    *[("json", json.dumps(_pubsub(v)).encode()) for v in VALID],
    ("form", b"recipient=gus%40example.com&scope=%2A"),
    ("form", b"next=%2Fadmin%2Falerts"),
]

bodies = st.one_of(
    st.just(None),
    json_values.map(lambda v: ("json", json.dumps(v).encode())),
    shaped.map(lambda v: ("json", json.dumps(v).encode())),
    st.one_of(shaped, json_values).map(lambda v: ("json", json.dumps(_pubsub(v)).encode())),
    st.binary(max_size=200).map(lambda b: ("raw", b)),
    st.sampled_from([10, 65, 1_000, 100_000]).map(lambda n: ("json", b"[" * n + b"]" * n)),
    st.dictionaries(st.sampled_from(["csrf_token", "token", "name", "next", "recipient", "scope"]), short).map(
        lambda d: ("form", urlencode(d).encode())
    ),
)
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "", "multipart/form-data"]
CREDENTIALS = ["none", "right", "wrong", "non-ascii", "internal", "session", "signed", "iap"]
EXTRA_HEADERS = {
    "Idempotency-Key": header_text,
    "Origin": st.sampled_from(["http://localhost", "https://evil.example", "null", ""]),
    "Sec-Fetch-Site": st.sampled_from(["same-origin", "cross-site", "same-site", "none", "é"]),
    "Host": st.sampled_from(["localhost", "localhost", "localhost", "127.0.0.1:8080", "evil.example", "[::1]"]),
    "X-Cloud-Trace-Context": header_text,
    "X-CloudScheduler-ScheduleTime": header_text,
    "X-Herald-Timestamp": header_text,
    "X-Herald-Signature": header_text,
    "X-Twilio-Email-Event-Webhook-Signature": header_text,
    "X-Twilio-Email-Event-Webhook-Timestamp": header_text,
    "x-goog-iap-jwt-assertion": header_text,
    "User-Agent": header_text,
}


@st.composite
def requests_for(draw: st.DrawFn, rules: list[tuple[str, str, list[str]]]) -> dict[str, Any]:
    rule, template, methods = draw(st.sampled_from(rules))
    # Mostly a method the rule serves (so the handler runs), sometimes any other.
    other = draw(st.integers(0, 9)) == 0
    method = draw(st.sampled_from(["GET", "POST", "DELETE", "PUT"] if other else methods))

    def fill(match: re.Match[str]) -> str:
        value = draw(path_values)
        return quote(value, safe="/" if match.group(1) == "path" else "") or "x"

    plausible = draw(st.booleans())  # half the requests look like a real caller's: valid ids, bodies, credentials
    if plausible:
        method = draw(st.sampled_from(methods))
        fill = lambda match: draw(ids).replace("/", "") or "x"  # noqa: E731
    path = re.sub(r"<(?:(\w+)(?:\([^)]*\))?:)?\w+>", fill, template)
    query = draw(queries)
    names = draw(st.lists(st.sampled_from(sorted(EXTRA_HEADERS)), max_size=2 if plausible else 4, unique=True))
    headers = {name: draw(EXTRA_HEADERS[name]) for name in names if not plausible or name != "Host"}
    body = draw(st.sampled_from(VALID_BODIES) if plausible else bodies)
    content_type = draw(st.sampled_from(CONTENT_TYPES)) if body is not None else None
    if body is not None and (plausible or draw(st.booleans())):  # mostly the type that matches the body
        content_type = {"json": "application/json", "form": "application/x-www-form-urlencoded"}.get(body[0], "")
    family = template.strip("/").split("/", 1)[0]
    fitting = {"api": "right", "admin": "session", "webhooks": "signed"}.get(family, "internal")
    credentials = [fitting] if plausible else CREDENTIALS
    return {
        "rule": rule,
        "method": method,
        "url": path + ("?" + urlencode(query) if query else ""),
        "headers": headers,
        "body": body[1] if body else None,
        "content_type": content_type,
        "credential": draw(st.sampled_from(credentials)),
        "with_csrf": plausible or draw(st.booleans()),
    }


# --- apps ----------------------------------------------------------------------------------
class Target:
    def __init__(self, name: str, tmp: Path) -> None:
        closed = name == "closed"
        self.name = name
        tokens = {"api_token": API_TOKEN, "admin_token": ADMIN_TOKEN} if closed else {}
        self.c = factories.container(
            tmp,
            event_secrets={"erp": EVENT_SECRET},
            sendgrid_webhook_public_key=SIGNER.public_key,
            admin_login_max_attempts=10**9,  # the limiter's 429 is tested elsewhere; here it would hide the login
            **tokens,
        )
        apply_definitions(self.c, [factories.report()])
        seed.seed(self.c.store, self.c.clock.now())
        self.app = create_app(self.c) if closed else served_on_loopback(self.c)
        self.anonymous = self.app.test_client()
        self.session = self.app.test_client()
        if closed:
            assert self.session.post("/admin/login", data={"token": ADMIN_TOKEN}).status_code == 303
        page = self.session.get("/admin/alerts").get_data(as_text=True)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert found
        self.csrf = found.group(1)
        self.rules = [
            (r.rule, r.rule, sorted((r.methods or set()) - {"HEAD", "OPTIONS"})) for r in self.app.url_map.iter_rules()
        ]
        RULES_ALL[name] = {r for r, _, _ in self.rules}

    def send(self, req: dict[str, Any]) -> Any:
        headers = dict(req["headers"])
        body: bytes | None = req["body"]
        client = self.anonymous
        credential = req["credential"]
        if credential == "right":
            headers["Authorization"] = f"Bearer {API_TOKEN}"
        elif credential == "wrong":
            headers["Authorization"] = "Bearer not-the-token"
            headers[INTERNAL_HEADER] = "0" * 64
        elif credential == "non-ascii":
            headers["Authorization"] = "Bearer tökén²"
            headers[INTERNAL_HEADER] = "ünïcode"
        elif credential == "internal":
            headers[INTERNAL_HEADER] = internal_token(self.c.secret)
        elif credential == "session":
            client = self.session
        elif credential == "signed":
            payload = body or b""
            stamp = str(int(self.c.clock.now().timestamp()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = signature(EVENT_SECRET, stamp, payload)
            headers.update(SIGNER.headers(payload, int(stamp)))
        elif credential == "iap":
            headers["x-goog-iap-jwt-assertion"] = "eyJhbGciOiJFUzI1NiJ9.e30.sig"
        if req["with_csrf"] and req["content_type"] == "application/x-www-form-urlencoded":
            body = (body or b"") + b"&csrf_token=" + self.csrf.encode()
        headers.setdefault("Host", "localhost")
        return client.open(
            req["url"], method=req["method"], headers=headers, data=body, content_type=req["content_type"]
        )


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    return {name: Target(name, tmp_path_factory.mktemp(name)) for name in ("open", "closed")}


def _check(target: Target, req: dict[str, Any]) -> None:
    response = target.send(req)
    text = response.get_data(as_text=True)
    TOTALS[str(response.status_code)] += 1
    BY_APP[target.name][str(response.status_code)] += 1
    RULES_HIT[target.name].add(req["rule"])
    assert response.status_code < 500, (req, response.status_code, text[:500])
    assert "Traceback" not in text and 'File "' not in text, (req, text[:500])


def _fuzz(target: Target) -> None:
    @settings(
        max_examples=EXAMPLES_PER_APP,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests on every run: a failure here is reproducible
        suppress_health_check=list(HealthCheck),
    )
    @given(requests_for(target.rules))
    def run(req: dict[str, Any]) -> None:
        _check(target, req)

    run()


def test_fuzz_loopback_open(targets: dict[str, Target]) -> None:
    _fuzz(targets["open"])


def test_fuzz_with_and_without_credentials(targets: dict[str, Target]) -> None:
    _fuzz(targets["closed"])


def test_fuzz_totals(targets: dict[str, Target]) -> None:
    """Every route was tried in both apps, at least 10,000 requests, none answered 5xx."""
    total = sum(TOTALS.values())
    report = {
        "requests": total,
        "by_status": dict(sorted(TOTALS.items())),
        "by_app": {name: dict(sorted(counts.items())) for name, counts in BY_APP.items()},
        "routes": {name: len(rules) for name, rules in RULES_ALL.items()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    REPORT_FILE.parent.mkdir(parents=True, exist_ok=True)
    REPORT_FILE.write_text(json.dumps(report, indent=2) + "\n")
    assert total >= MIN_REQUESTS, report
    assert not [s for s in TOTALS if s.startswith("5")], report
    for name, rules in RULES_ALL.items():
        assert rules <= RULES_HIT[name], (name, sorted(rules - RULES_HIT[name]))


def fuzz_summary() -> str | None:
    """One line for the terminal summary (tests/web/conftest.py), once the fuzz ran."""
    if not TOTALS:
        return None
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(TOTALS.items()))
    return f"fuzz: {sum(TOTALS.values())} requests over {max(map(len, RULES_ALL.values()))} routes; {codes}"
