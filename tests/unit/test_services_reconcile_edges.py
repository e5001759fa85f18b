"""services/reconcile.py edges: a lost finish is queued again under a name per period, so
a finish lost once more is queued again in the next period (the docstring's "queues it again
under a deterministic name per period")."""

from __future__ import annotations

from herald.domain.states import DeliveryStatus, RunStatus
from herald.services import reconcile as rec
from herald.services.tasks import FINISH_RUN
from tests.unit import test_services_reconcile as base
from tests.unit.test_services_reconcile import AFTER, NOW, make_delivery, make_run

c = base.c  # the fixture: board-pack, a fake clock at NOW


def finish_tasks(c):
    return [t.name for t in c.queue.tasks.values() if t.path == FINISH_RUN]


def test_a_finish_lost_again_is_queued_again_in_the_next_period(c):
    make_run(c, "done", RunStatus.DELIVERING)
    make_delivery(c, "done", "a@example.com", DeliveryStatus.SENT)
    assert rec.reconcile(c, NOW).runs == ["done"]
    assert rec.reconcile(c, NOW + AFTER).runs == ["done"]  # the run is still delivering: lost again
    assert len(set(finish_tasks(c))) == 2
