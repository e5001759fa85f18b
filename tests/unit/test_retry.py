from datetime import timedelta

import pytest

from herald.domain.retry import RetryPolicy


def test_default_schedule_is_2_8_32_minutes_then_gives_up():
    policy = RetryPolicy()
    assert [policy.delay_after(n) for n in (1, 2, 3, 4)] == [
        timedelta(minutes=2),
        timedelta(minutes=8),
        timedelta(minutes=32),
        None,
    ]


def test_provider_hint_longer_than_the_schedule_wins():
    assert RetryPolicy().delay_after(1, retry_after=300) == timedelta(minutes=5)
    assert RetryPolicy().delay_after(1, retry_after=5) == timedelta(minutes=2)


def test_configured_delays_and_count():
    policy = RetryPolicy(delays=(1.0, 2.0), max_retries=4)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4, 5)] == [
        timedelta(seconds=1),
        timedelta(seconds=2),
        timedelta(seconds=2),  # the last delay repeats when there are more retries than delays
        timedelta(seconds=2),
        None,
    ]


def test_attempts_count_from_one():
    with pytest.raises(ValueError):
        RetryPolicy().delay_after(0)
