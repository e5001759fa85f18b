"""Shared pytest configuration. Fixture modules register themselves below."""

pytest_plugins = [
    "tests.support.emulators",
    "tests.support.gcp_emulators",
    "tests.support.fixtures",
]
