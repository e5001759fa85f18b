"""Regenerate docs/admin-delivery-report.png: `.venv/bin/python -m tests.browser.screenshot`.

The seeded data of tests/browser/seed.py, served by a werkzeug server in a thread, signed
in through the login form, captured by the same headless Chromium as the browser tests."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from tests import factories
from tests.browser import seed
from tests.browser.conftest import CHROMIUM_ARGS, chromium_path

OUT = Path(__file__).resolve().parents[2] / "docs" / "admin-delivery-report.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        c = factories.container(Path(tmp), admin_token="screenshot")
        apply_definitions(c, [factories.report()])
        seed.seed(c.store, c.clock.now())
        server = make_server("127.0.0.1", 0, create_app(c), threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}"
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(f"{url}/admin/login?next=/admin/reports/board-pack")
                page.fill("input[name=token]", "screenshot")
                page.fill("input[name=name]", "Olivia Ops")
                page.click("button[type=submit]")
                page.wait_for_url("**/admin/reports/board-pack")
                page.screenshot(path=str(OUT), full_page=True)
                browser.close()
        finally:
            server.shutdown()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
