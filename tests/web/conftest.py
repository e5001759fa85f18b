import pytest

from herald.services.scheduling import apply_definitions
from herald.web.auth import INTERNAL_HEADER, internal_token
from tests import factories
from tests.web.serving import served_on_loopback


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path)
    apply_definitions(container, [factories.report()])
    return container


@pytest.fixture
def app(c):
    """`herald serve` on loopback with no token: the API is open to the test client (127.0.0.1)."""
    return served_on_loopback(c)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def internal_headers(c):
    return {INTERNAL_HEADER: internal_token(c.secret)}


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    """The fuzz totals by status code (tests/web/test_fuzz.py), for the issue note."""
    import sys

    # tests/web is not a package, so the module's name depends on the import mode
    found = [m for n, m in list(sys.modules.items()) if n.endswith("test_fuzz") and hasattr(m, "fuzz_summary")]
    fuzz = found[0] if found else None
    line = fuzz.fuzz_summary() if fuzz is not None else None
    if line:
        terminalreporter.write_line(line)
