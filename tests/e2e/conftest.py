"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from tests.e2e.counting import CountingSink


@pytest.fixture
def counting():
    sinks: list[CountingSink] = []

    def start(*args: str) -> CountingSink:
        sinks.append(CountingSink(*args))
        return sinks[-1]

    yield start
    for sink in sinks:
        sink.stop()
