"""services/triggers.py edges: a trigger's parameters are all set, fixed values and values
taken from the event alike, whatever their order in the definition."""

from __future__ import annotations

from herald.services import triggers as tr
from herald.services.scheduling import apply_definitions
from tests import factories
from tests.unit import test_services_triggers as base
from tests.unit.test_services_triggers import TRIGGER, event

c = base.c  # the fixture: board-pack triggered by erp period.closed


def test_a_fixed_parameter_before_one_from_the_event_does_not_hide_it(c):
    trigger = {**TRIGGER, "params": {"kind": "monthly", "ledger": "$.data.ledger"}}
    apply_definitions(c, [factories.report(triggers=[trigger])])
    (run_id,) = tr.ingest(c, "erp", event()).run_ids
    assert c.store.get_run(run_id).params == {"kind": "monthly", "ledger": "GL"}
