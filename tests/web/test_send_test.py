"""'Send a test to me' (issue 13): render the report and send it only to one address,
marked as a test, never counted in the report's figures, its monitor or its owner alerts."""

from __future__ import annotations

from click.testing import CliRunner

from herald.cli import main
from herald.services.on_time import on_time
from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from tests import factories
from tests.drive import drain
from tests.fakes import StaticSource
from tests.web.test_admin import TOKEN, csrf, login

HC = "https://hc-ping.com/0f3e"


def test_a_test_goes_only_to_its_address_marked_and_uncounted(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN)
    apply_definitions(c, [factories.report(heartbeat_url=HC)])
    from herald.services import runs

    run, _ = runs.start_manual_run(c, "board-pack", request_id="t1", test_to="me@example.com")
    drain(c)
    assert sorted(c.mailer.sent) == ["me@example.com"]  # not a@ or b@, the report's recipients
    (message,) = c.mailer.sent["me@example.com"]
    assert message.subject.startswith("[Test] Board pack")
    (d,) = c.store.list_deliveries(run_id=run.id).items
    assert d.test and c.store.get_run(run.id).trigger == "test"
    assert c.heartbeat.pings == []  # the monitor times the schedule, not a test
    assert all(r.slots == 0 for r in on_time(c, factories.report()))
    client = create_app(c).test_client()
    assert login(client).status_code == 303
    page = client.get("/admin/reports/board-pack").get_data(as_text=True)
    assert "me@example.com" not in page and run.id not in page  # not in the report's figures


def test_a_failed_test_alerts_no_owner(tmp_path):
    c = factories.container(tmp_path)
    c.source = StaticSource(fail="upstream down")
    apply_definitions(c, [factories.report()])
    from herald.services import runs

    run, _ = runs.start_manual_run(c, "board-pack", request_id="t1", test_to="")
    drain(c)
    assert c.store.get_run(run.id).status == "failed" and c.store.get_run(run.id).test_to == "cfo@example.com"
    assert c.mailer.sent == {} and c.store.list_alerts() == []


def test_the_admin_button_sends_a_test_to_the_owner_with_a_token_login(tmp_path):
    c = factories.container(tmp_path, admin_token=TOKEN)
    apply_definitions(c, [factories.report()])
    client = create_app(c).test_client()
    assert login(client).status_code == 303
    assert client.post("/admin/reports/board-pack/test", data={}).status_code in (400, 403)  # no CSRF token
    response = client.post("/admin/reports/board-pack/test", data={"csrf_token": csrf(client)})
    assert response.status_code == 303
    drain(c)
    assert sorted(c.mailer.sent) == ["cfo@example.com"]
    assert c.mailer.sent["cfo@example.com"][0].subject.startswith("[Test]")


def test_herald_run_to_sends_a_test_and_refuses_a_non_address(tmp_path):
    data = tmp_path / "data"
    reports = tmp_path / "reports.yaml"
    reports.write_text(
        "reports:\n  - id: board-pack\n    name: Board pack\n    owner: cfo@example.com\n"
        "    source: {type: pdf, data: {columns: [a], rows: [[1]]}}\n    recipients: {email: [a@example.com]}\n"
    )
    runner = CliRunner()
    assert runner.invoke(main, ["--data-dir", str(data), "apply", str(reports)]).exit_code == 0
    bad = runner.invoke(main, ["--data-dir", str(data), "run", "board-pack", "--to", "not-an-address"])
    assert bad.exit_code == 2 and "not an e-mail address" in bad.output
    sent = runner.invoke(main, ["--data-dir", str(data), "run", "board-pack", "--to", "me@example.com", "--wait"])
    assert sent.exit_code == 0, sent.output
    assert "test run to me@example.com" in sent.output
    mails = sorted(p.read_text() for p in (data / "outbox" / "mail").glob("*.eml"))
    assert len(mails) == 1 and "To: me@example.com" in mails[0] and "[Test] Board pack" in mails[0]


def test_applied_changes_show_on_the_report_page_without_their_values(tmp_path):
    from herald.services import definitions

    c = factories.container(tmp_path, admin_token=TOKEN)
    first = factories.report()
    changed = factories.report(
        name="Board pack v2",
        source={"type": "http", "url": "https://reports.example.com/x", "headers": {"X-Key": "s3cret"}},
    )
    now = c.clock.now()
    for report, actor in ((first, "ci@example.com"), (changed, "olivia@example.com")):
        definitions.apply(c.store, definitions.plan(c.store.list_reports(), [report], now), now, actor=actor)
    client = create_app(c).test_client()
    assert login(client).status_code == 303
    page = client.get("/admin/reports/board-pack").get_data(as_text=True)
    assert "Definition changes" in page and "olivia@example.com" in page and "ci@example.com" in page
    assert "s3cret" not in page  # who, when, which fields; never the values
