"""services/alerts.py edges: an owner alert is idempotent per (kind, report, run) — so
different kinds or reports are different alerts — and the stored alert names its report."""

from __future__ import annotations

from herald.services import alerts
from tests.unit.test_services_alerts import container

OWNER = "cfo@example.com"


def owner_alert(c, kind, report_id, run_id=None):
    return alerts.alert_owner(c, kind=kind, owner=OWNER, report_id=report_id, run_id=run_id, subject="s", body="b")


def test_owner_alerts_differ_per_kind_and_per_report(tmp_path):
    c = container(tmp_path)
    assert owner_alert(c, "run_failed", "board-pack", "r1")
    assert owner_alert(c, "delivery_bounced", "board-pack", "r1")  # another kind, same run
    assert owner_alert(c, "definition_invalid", "board-pack")
    assert owner_alert(c, "definition_invalid", "sales-daily")  # another report, no run
    assert not owner_alert(c, "definition_invalid", "sales-daily")
    stored = c.store.list_alerts()
    assert sorted((a.kind, a.report_id, a.run_id) for a in stored) == [
        ("definition_invalid", "board-pack", None),
        ("definition_invalid", "sales-daily", None),
        ("delivery_bounced", "board-pack", "r1"),
        ("run_failed", "board-pack", "r1"),
    ]
