import pytest

from herald.services.scheduling import apply_definitions
from herald.web.app import create_app
from herald.web.auth import INTERNAL_HEADER, internal_token
from tests import factories


@pytest.fixture
def c(tmp_path):
    container = factories.container(tmp_path)
    apply_definitions(container, [factories.report()])
    return container


@pytest.fixture
def app(c):
    return create_app(c)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def internal_headers(c):
    return {INTERNAL_HEADER: internal_token(c.secret)}
