"""The `herald` command: clear errors and exit code 2 for bad input, never a traceback."""

import yaml
from click.testing import CliRunner

from herald.cli import main
from tests import factories


def write(tmp_path, reports) -> str:
    path = tmp_path / "reports.yaml"
    path.write_text(yaml.safe_dump({"reports": reports}))
    return str(path)


def invoke(tmp_path, *args):
    return CliRunner().invoke(main, ["--data-dir", str(tmp_path / "data"), *args])


def test_apply_prints_the_next_three_fire_times_in_zone_and_utc(tmp_path):
    path = write(tmp_path, [factories.report().model_dump(mode="json")])
    result = invoke(tmp_path, "apply", path)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "UTC" in line]
    assert len(lines) == 3 and all("(Europe/London)" in line for line in lines)
    status = invoke(tmp_path, "status")
    assert '"report": "board-pack"' in status.output


def test_an_invalid_report_applies_nothing(tmp_path):
    good = factories.report(id="good").model_dump(mode="json")
    bad = {**factories.report(id="bad").model_dump(mode="json"), "owner": "nobody"}
    result = invoke(tmp_path, "apply", write(tmp_path, [good, bad]))
    assert result.exit_code == 2
    assert "report 'bad': owner:" in result.output and "nothing applied" in result.output
    assert "Traceback" not in result.output
    assert invoke(tmp_path, "status").output == ""


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("reports:\n  - id: x\n    name: [unclosed\n")
    result = invoke(tmp_path, "apply", str(path))
    assert result.exit_code == 2 and "not valid YAML at line" in result.output


def test_a_missing_file_is_a_clear_error(tmp_path):
    result = invoke(tmp_path, "apply", str(tmp_path / "nope.yaml"))
    assert result.exit_code != 0 and "cannot read" in result.output and "Traceback" not in result.output


def test_check_validates_without_applying(tmp_path):
    path = write(tmp_path, [factories.report().model_dump(mode="json")])
    result = invoke(tmp_path, "apply", "--check", path)
    assert result.exit_code == 0 and "1 report(s) valid" in result.output
    assert invoke(tmp_path, "status").output == ""


def test_run_an_unknown_report_exits_2(tmp_path):
    result = invoke(tmp_path, "run", "nope")
    assert result.exit_code == 2 and "unknown report 'nope'" in result.output


def test_run_with_wait_delivers_to_the_outbox(tmp_path):
    invoke(tmp_path, "apply", write(tmp_path, [factories.report().model_dump(mode="json")]))
    result = invoke(tmp_path, "run", "board-pack", "--param", "region=EU", "--wait")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("succeeded")
    assert len(list((tmp_path / "data" / "outbox" / "mail").glob("*.eml"))) == 2


def test_bad_param_syntax(tmp_path):
    result = invoke(tmp_path, "run", "board-pack", "--param", "novalue")
    assert result.exit_code == 2 and "is not k=v" in result.output


def test_examples_are_valid(tmp_path):
    result = invoke(tmp_path, "apply", "--check", "examples/reports.yaml")
    assert result.exit_code == 0, result.output
