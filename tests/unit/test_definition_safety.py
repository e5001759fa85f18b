"""Definition fields that reach message headers refuse line breaks and controls (issues 10, 11);
summaries rendered from run parameters never carry one; strict numbers and secrets."""

from __future__ import annotations

from typing import Any

import pytest

from herald.domain.reports import check_params, render_summary
from herald.domain.strict import same_secret, strict_int
from tests import factories


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": "Board pack\r\nBcc: everyone@example.com"},
        {"name": "Board\x00pack"},
        {"name": "Board\u202epack"},  # right-to-left override
        {"summary": "{name}\nX-Injected: 1"},
        {"source": {"type": "http", "url": "https://r.example.com/", "headers": {"X-A": "v\r\nX-B: 1"}}},
        {"source": {"type": "http", "url": "https://r.example.com/\r\nHost: evil"}},
    ],
)
def test_header_bound_fields_refuse_controls(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"control|line breaks|URL"):
        factories.report(**overrides)


def test_a_summary_from_parameters_stays_one_line_and_bounded() -> None:
    params = {"client": "Acme\r\nBcc: x@example.com", "long": "y" * 5000}
    line = render_summary("{params[client]} {params[long]}", name="n", period="p", rows=0, params=params)
    assert "\r" not in line and "\n" not in line and len(line) <= 1 + 500 + len("Acme  Bcc: x@example.com")


@pytest.mark.parametrize("params", [{"a": "x" * 501}, {"a": "1\n2"}, {"": "x"}, {"a b": "x"}, {"a": "\u2028"}])
def test_check_params_refuses(params: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        check_params(params)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("²", None),
        ("٣", None),
        ("-1", None),
        ("1.0", None),
        ("", None),
        (" 1", None),
        ("1" * 19, None),
    ],
)
def test_strict_int(text: str, expected: int | None) -> None:
    assert strict_int(text) == expected


def test_same_secret_never_raises_on_non_ascii() -> None:
    assert same_secret("abc", "abc") and not same_secret("abd", "abc")
    assert not same_secret("ä", "abc") and not same_secret("abc\u00e9", "abc")
