import pytest

from herald.domain.reports import DefinitionError, parse_definitions
from tests.factories import report


def valid(**overrides):
    data = report().model_dump(mode="json")
    data.update(overrides)
    return data


def problems(*reports) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        parse_definitions({"reports": list(reports)})
    return info.value.problems


def test_a_valid_file_parses():
    parsed = parse_definitions({"reports": [valid(), valid(id="other")]})
    assert [r.id for r in parsed] == ["board-pack", "other"]


def test_errors_name_the_report_and_the_field():
    lines = problems(valid(schedule={"cron": "0 7 * * *", "timezone": "Mars/Base"}))
    assert lines == [
        "report 'board-pack': schedule.timezone: unknown time zone 'Mars/Base' (use an IANA name such as Europe/London)"
    ]


def test_every_problem_is_reported_at_once():
    lines = problems(
        valid(id="a", owner="not-an-email"),
        valid(id="b", schedule={"cron": "99 * * * *"}),
        valid(id="c", recipients={"email": ["x@example.com", "X@example.com"]}),
    )
    assert len(lines) == 3
    assert lines[0].startswith("report 'a': owner:")
    assert "invalid cron" in lines[1] and lines[1].startswith("report 'b'")
    assert "duplicate recipients: x@example.com" in lines[2]


def test_duplicate_ids_are_refused():
    assert problems(valid(), valid()) == ["report 'board-pack': id: duplicate report id"]


def test_unknown_fields_and_source_types_are_refused():
    assert "colour" in problems(valid(colour="red"))[0]
    assert "source" in problems(valid(source={"type": "excel"}))[0]


def test_bad_email_recipient_is_refused():
    assert "recipients.email.0" in problems(valid(recipients={"email": ["nobody"]}))[0]


@pytest.mark.parametrize("document", [None, [], {"reports": "x"}, {"other": []}])
def test_the_document_must_hold_a_reports_list(document):
    with pytest.raises(DefinitionError, match="'reports' list"):
        parse_definitions(document)


def test_unknown_summary_placeholder_is_refused():
    assert "unknown placeholder" in problems(valid(summary="{nope}"))[0]
