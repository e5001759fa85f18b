"""The state machines, checked by behaviour: random sequences of claims, sends, failures,
provider events (in any order, duplicated, late), clock moves and resends run through the
real services on the embedded SQLite store, and every status a delivery or a run is
seen in must be a step forward.

The oracle is the flow README.md and ARCHITECTURE.md state, written out below, not
herald.domain.states' tables (which this file never reads):

- a delivery waits (queued), is attempted (claimed and sending, retrying after a transient
  failure, reconciling an outcome the provider may have), or is given up as unknown
  ("reconciled before it is re-sent"; unknown is never re-sent on its own, only a late
  provider event can still confirm it); it is accepted (sent), confirmed (delivered), or
  ends bounced, dropped, failed or suppressed;
- "provider events move state forward only … never let delivered overwrite bounced or
  opened"; after acceptance the only endings are bounced and dropped;
- the one way back is resend-to-failed: "one new attempt for each failed delivery"
  (failed or unknown -> queued), and only when someone asks for it;
- a run goes pending -> waiting -> rendering -> delivering -> succeeded | partial |
  failed | missed | skipped, and a finished run never changes status.
"""

from __future__ import annotations

import contextlib
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from herald.domain.errors import DeliveryError
from herald.domain.states import RunStatus, run_outcome
from herald.ports.clock import FakeClock
from herald.services import delivery, feedback, resend, runs
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.drive import drain
from tests.factories import T0
from tests.support.sendgrid_events import event

RECIPIENTS = ["a@example.com", "b@example.com", "c@example.com"]

# Delivery phases from the README's flow. Within the attempt phase a delivery may move
# freely (claim, retry, reclaim after a lost lease, reconcile); everything else moves up.
WAITING, ATTEMPT, GIVEN_UP, ACCEPTED, CONFIRMED, ENDED = range(6)
PHASE = {
    "queued": WAITING,
    "sending": ATTEMPT,
    "retrying": ATTEMPT,
    "reconciling": ATTEMPT,
    "unknown": GIVEN_UP,
    "sent": ACCEPTED,
    "delivered": CONFIRMED,
    "bounced": ENDED,
    "dropped": ENDED,
    "failed": ENDED,
    "suppressed": ENDED,
}
ENDINGS_AFTER_ACCEPTANCE = {"bounced", "dropped"}
RESEND_EDGES = {("failed", "queued"), ("unknown", "queued")}
RUN_ORDER = {"pending": 0, "waiting": 1, "rendering": 2, "delivering": 3}
RUN_FINISHED = {"succeeded", "partial", "failed", "missed", "skipped"}


def delivery_step_ok(before: str, after: str, resent: bool) -> bool:
    if before == after:
        return True
    if (before, after) in RESEND_EDGES:
        return resent
    if PHASE[before] == ENDED:
        return False  # an ending is an ending
    if PHASE[before] >= ACCEPTED and PHASE[after] == ENDED:
        return after in ENDINGS_AFTER_ACCEPTANCE
    if PHASE[before] == ATTEMPT and PHASE[after] == ATTEMPT:
        return True
    return PHASE[after] > PHASE[before]


def run_step_ok(before: str, after: str) -> bool:
    if before == after:
        return True
    if before in RUN_FINISHED:
        return False
    return after in RUN_FINISHED or RUN_ORDER[after] > RUN_ORDER[before]


# The oracle itself, on cases the README states in words.
@pytest.mark.parametrize(
    ("before", "after", "resent", "ok"),
    [
        ("queued", "sending", False, True),
        ("sending", "retrying", False, True),
        ("retrying", "sending", False, True),
        ("sending", "sent", False, True),
        ("sent", "delivered", False, True),
        ("delivered", "bounced", False, True),  # an asynchronous bounce
        ("delivered", "sent", False, False),
        ("bounced", "delivered", False, False),  # "never let delivered overwrite bounced"
        ("sent", "failed", False, False),
        ("unknown", "sending", False, False),  # never re-sent on its own
        ("unknown", "sent", False, True),  # a late event confirms it
        ("failed", "queued", False, False),
        ("failed", "queued", True, True),  # resend to failed
        ("suppressed", "queued", True, False),
    ],
)
def test_the_oracle_says_what_the_readme_says(before, after, resent, ok):
    assert delivery_step_ok(before, after, resent) is ok


# Operations ---------------------------------------------------------------------------------
recipient = st.integers(0, len(RECIPIENTS) - 1)
provider_event = st.tuples(
    st.just("event"),
    recipient,
    st.sampled_from(["processed", "delivered", "open", "click", "bounce", "dropped", "deferred", "spamreport"]),
    st.integers(-900, 900),  # the event's own timestamp around now: out of order, late
)
operation = st.one_of(
    st.tuples(st.just("fail"), recipient, st.sampled_from(["transient", "permanent", "unknown"])),
    st.tuples(st.just("send"), recipient),  # a duplicate or redelivered send task, right now
    st.tuples(st.just("drain")),
    st.tuples(st.just("advance"), st.sampled_from([1, 2, 8, 16, 32, 60])),
    st.tuples(st.just("later"), st.sampled_from([2, 8, 15, 32, 60])),  # time passes, the queue runs what is due
    provider_event,
    provider_event,  # twice as likely as the others: events are most of a delivery's life
    st.tuples(st.just("replay")),  # SendGrid retries the last batch
    st.tuples(st.just("resend")),
    st.tuples(st.just("execute")),  # a redelivered execute task
)


ERRORS = {
    "transient": lambda: DeliveryError("421 try later", permanent=False),
    "permanent": lambda: DeliveryError("550 no such user", permanent=True),
    "unknown": lambda: DeliveryError("read timeout", permanent=False, unknown=True),
}
# What each recipient's first sends meet, before any operation: failures up front.
plans = st.lists(st.lists(st.sampled_from(sorted(ERRORS)), max_size=2), min_size=3, max_size=3)


class World:
    def __init__(self, data_dir: Path, plan: list[list[str]]) -> None:
        self.c = factories.container(
            data_dir,
            FakeClock(T0),
            sendgrid_api_key="SG.test",  # unknown outcomes are reconciled through events
            sendgrid_webhook_public_key="events-on",
            reconcile_wait_seconds=900,
        )
        apply_definitions(self.c, [factories.report(recipients={"email": RECIPIENTS})])
        started, _ = runs.start_manual_run(self.c, "board-pack", request_id="prop")
        self.run_id = started.id
        runs.execute_run(self.c, self.run_id)  # fan-out: one queued delivery per recipient
        for address, errors in zip(RECIPIENTS, plan, strict=True):
            self.c.mailer.script[address] = [ERRORS[kind]() for kind in errors]
        self.last_batch: list[dict[str, Any]] = []

    def deliveries(self) -> dict[str, Any]:
        return {d.recipient: d for d in self.c.store.list_deliveries(run_id=self.run_id, limit=100).items}

    def apply(self, op: tuple[Any, ...]) -> None:
        c, kind = self.c, op[0]
        if kind == "fail":
            c.mailer.script.setdefault(RECIPIENTS[op[1]], []).append(ERRORS[op[2]]())
        elif kind == "send":
            delivery.send_delivery(c, self.deliveries()[RECIPIENTS[op[1]]].id)
        elif kind == "drain":
            drain(c)
        elif kind == "advance":
            c.clock.advance(minutes=op[1])
        elif kind == "later":
            c.clock.advance(minutes=op[1])
            drain(c)
        elif kind == "event":
            d = self.deliveries()[RECIPIENTS[op[1]]]
            extra = {"type": "bounce", "reason": "550 5.1.1"} if op[2] == "bounce" else {}
            self.last_batch = [event(op[2], d, c.clock.now() + timedelta(seconds=op[3]), **extra)]
            feedback.ingest(c, self.last_batch)
        elif kind == "replay":
            feedback.ingest(c, self.last_batch)
        elif kind == "resend":
            with contextlib.suppress(resend.ResendRefused):  # a run still settling: refused, changes nothing
                resend.resend_failed(c, self.run_id, "property-test")
        elif kind == "execute":
            runs.execute_run(c, self.run_id)


SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same sequences on every run: a failure is reproducible, CI is stable
)


def check_sequence(plan: list[list[str]], ops: list[tuple[Any, ...]], *, send_first: bool = False) -> None:
    with tempfile.TemporaryDirectory(prefix="herald-states-") as data_dir:
        world = World(Path(data_dir), plan)
        seen = {r: d.status.value for r, d in world.deliveries().items()}
        assert set(seen.values()) == {"queued"} and len(seen) == len(RECIPIENTS)
        run_status = world.c.store.get_run(world.run_id).status.value
        history: list[str] = []
        for op in [("drain",), *ops] if send_first else ops:
            world.apply(op)
            history.append(repr(op))
            now = {r: d.status.value for r, d in world.deliveries().items()}
            assert set(now) == set(seen), "a delivery appeared or vanished"
            for who, after in now.items():
                before = seen[who]
                assert delivery_step_ok(before, after, resent=op[0] == "resend"), (
                    f"{who}: {before} -> {after} after {history}"
                )
            seen = now
            after_run = world.c.store.get_run(world.run_id).status.value
            assert run_step_ok(run_status, after_run), f"run: {run_status} -> {after_run} after {history}"
            run_status = after_run


@pytest.mark.mutation_stage2
@SETTINGS
@given(plans, st.lists(operation, min_size=1, max_size=50))
def test_random_event_sequences_only_move_deliveries_and_runs_forward(plan, ops):
    check_sequence(plan, ops)


# Most of a delivery's life is provider events after the send: every message is accepted
# first (and some fail for good), then events arrive in any order, late and repeated.
after_sending = st.one_of(
    provider_event, st.tuples(st.just("replay")), st.tuples(st.just("later"), st.sampled_from([2, 8, 15, 32, 60]))
)


@pytest.mark.mutation_stage2
@SETTINGS
@given(
    st.lists(st.lists(st.just("permanent"), max_size=1), min_size=3, max_size=3), st.lists(after_sending, max_size=30)
)
def test_provider_events_in_any_order_only_move_sent_mail_forward(plan, ops):
    check_sequence(plan, [*ops, ("resend",), *ops], send_first=True)


@pytest.mark.parametrize(
    ("delivered", "failed", "outcome"),
    [(3, 0, RunStatus.SUCCEEDED), (2, 1, RunStatus.PARTIAL), (0, 3, RunStatus.FAILED), (0, 0, RunStatus.SUCCEEDED)],
)
def test_run_outcome(delivered: int, failed: int, outcome: RunStatus):
    # README: "run completes: succeeded | partial | failed".
    assert run_outcome(delivered, failed) == outcome
