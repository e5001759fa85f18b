"""The admin pages in Chromium against a real `herald serve` with seeded delivery data:
refused without a session, log in, the delivery report, filter to bounced, resend to the
failed recipients and watch the new attempts land, export the CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from herald.adapters.embedded.sqlite_store import SQLiteStore
from tests.browser import seed
from tests.e2e.harness import HeraldProcess, wait_until

pytestmark = pytest.mark.browser

TOKEN = "browser-admin-token"
REPORT = {
    "id": seed.REPORT,
    "name": "Board pack",
    "owner": "cfo@example.com",
    "schedule": {"cron": "0 7 * * *", "timezone": "Europe/London"},
    "source": {"type": "pdf", "data": {"columns": ["a"], "rows": [[1]]}},
    "recipients": {"email": ["ann@example.com", "ben@example.com"]},
}


@pytest.fixture(scope="module")
def herald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HeraldProcess, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("herald-admin")
    store = SQLiteStore(data_dir / "herald.db")
    ids = seed.seed(store, datetime.now(UTC))
    store.close()
    process = HeraldProcess(data_dir, [REPORT], env={"HERALD_ADMIN_TOKEN": TOKEN}).start()
    try:
        yield process, ids
    finally:
        process.stop()


def rows(page: Any) -> dict[str, dict[str, str]]:
    """The delivery table as {recipient: {status, tries, notes}}."""
    out = {}
    for row in page.locator("#deliveries tbody tr[data-recipient]").all():
        cells = row.locator("td")
        out[row.get_attribute("data-recipient")] = {
            "status": row.get_attribute("data-status"),
            "tries": cells.nth(2).inner_text().strip(),
            "notes": cells.nth(9).inner_text().strip(),
        }
    return out


def test_unauthenticated_access_is_refused(herald: Any, page: Any) -> None:
    process, _ = herald
    page.goto(f"{process.url}/admin/reports/board-pack")
    assert "/admin/login" in page.url
    assert page.locator("h1").inner_text() == "Sign in"
    assert page.locator("#deliveries").count() == 0
    csv_response = requests.get(f"{process.url}/admin/reports/board-pack/deliveries.csv", timeout=5)
    assert csv_response.status_code == 401
    post = requests.post(f"{process.url}/admin/runs/r-new/resend-failed", data={"csrf_token": "x"}, timeout=5)
    assert post.status_code == 401
    page.fill("input[name=token]", "wrong")
    page.click("button[type=submit]")
    assert page.locator("[role=alert]").inner_text() == "That token is not right."


def test_report_filter_resend_and_export(herald: Any, page: Any) -> None:
    process, ids = herald
    page.goto(f"{process.url}/admin/reports/board-pack")
    page.fill("input[name=token]", TOKEN)
    page.fill("input[name=name]", "Browser Test")
    page.click("button[type=submit]")
    page.wait_for_url("**/admin/reports/board-pack")

    table = rows(page)
    assert len(table) == 7
    assert table["eve@example.com"]["status"] == "failed"
    assert "gave up after 4 attempts" in table["eve@example.com"]["notes"]

    # Filter to bounced: exactly the two bounced recipients, with their reasons.
    page.select_option("select[name=status]", "bounced")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**status=bounced**")
    assert set(rows(page)) == set(ids["bounced"])
    assert "550 5.1.1 mailbox unknown" in page.locator("#deliveries").inner_text()

    # Resend to the failed recipients: one new attempt each, sent by the running worker.
    page.click("text=Reset")
    page.click("#resend-failed")
    assert "Queued a new attempt for 2 failed deliveries." in page.locator(".flash").inner_text()

    def resent() -> dict[str, dict[str, str]] | None:
        page.reload()
        table = rows(page)
        done = all(table[r]["status"] == "sent" for r in ids["failed"])
        return table if done else None

    table = wait_until(resent, 30, "the resent deliveries to be sent")
    assert table["eve@example.com"]["tries"] == "5" and table["fay@example.com"]["tries"] == "2"
    assert "resent by Browser Test (token)" in table["eve@example.com"]["notes"]
    assert table["cat@example.com"]["status"] == "bounced"  # bounced addresses are not resent
    assert page.locator("#resend-failed").count() == 0  # nothing failed any more

    # Export the CSV of the run.
    with page.expect_download() as info:
        page.click("#export-csv")
    path = info.value.path()
    exported = list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))
    assert len(exported) == 7
    eve = next(r for r in exported if r["recipient"] == "eve@example.com")
    assert eve["status"] == "sent" and eve["resent_by"] == "Browser Test (token)"
    assert info.value.suggested_filename.endswith("-deliveries.csv")
