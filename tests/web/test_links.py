"""Tracked download links: GET shows a page (scanners don't count), POST downloads and counts."""

import pytest

from herald.services import runs
from tests.drive import drain


@pytest.fixture
def delivered(c):
    run, _ = runs.start_manual_run(c, "board-pack", request_id="r")
    drain(c)
    return c.store.list_deliveries(run_id=run.id).items[0]


def test_get_shows_a_page_and_counts_nothing(client, c, delivered):
    page = client.get(f"/l/{delivered.link_token}")
    assert page.status_code == 200 and b"Download the report" in page.data
    assert "downloads" not in c.store.get_delivery(delivered.id).events


def test_post_counts_and_redirects_to_a_short_lived_signed_url(client, c, delivered):
    response = client.post(f"/l/{delivered.link_token}", headers={"User-Agent": "pytest-browser"})
    assert response.status_code == 303
    events = c.store.get_delivery(delivered.id).events
    assert events["downloads"]["count"] == 1 and events["downloads"]["last_user_agent"] == "pytest-browser"
    file = client.get(response.headers["Location"].removeprefix(c.settings.public_url))
    assert file.status_code == 200 and file.data.startswith(b"%PDF")
    c.clock.advance(minutes=6)
    assert client.get(response.headers["Location"].removeprefix(c.settings.public_url)).status_code == 403


def test_expired_links_say_so(client, c, delivered):
    c.clock.advance(days=7, seconds=1)
    page = client.get(f"/l/{delivered.link_token}")
    assert page.status_code == 410 and b"expired" in page.data
    assert client.post(f"/l/{delivered.link_token}").status_code == 410


@pytest.mark.parametrize("token", ["short", "x" * 32, "y" * 100])
def test_unknown_or_tampered_tokens_are_a_plain_404(client, token):
    response = client.get(f"/l/{token}")
    assert response.status_code == 404 and response.data == b"Not found"


def test_tampered_blob_signature_is_403(client, c, delivered):
    url = client.post(f"/l/{delivered.link_token}").headers["Location"].removeprefix(c.settings.public_url)
    assert client.get(url.replace("sig=", "sig=0")).status_code == 403
