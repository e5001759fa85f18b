"""The `herald` command: clear errors and exit code 2 for bad input, never a traceback."""

import itertools
import json
import uuid
from dataclasses import replace

import pytest
import yaml
from click.testing import CliRunner

from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.adapters.gcp.firestore_store import FirestoreStore
from herald.bootstrap import build_container
from herald.cli import main
from herald.domain.errors import DeliveryError
from herald.ports.clock import FakeClock
from tests import factories
from tests.fakes import ScriptedMailer


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


# Issue 13: plans, definitions as code, a --wait that waits --------------------------
def write_file(path, reports):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"reports": reports}))
    return str(path)


def stored(tmp_path):
    return {s.definition.id: s for s in SQLiteStore(tmp_path / "data" / "herald.db").list_reports()}


def test_check_prints_the_plan_and_fire_times_and_creates_no_store(tmp_path):
    path = write(tmp_path, [factories.report().model_dump(mode="json")])
    result = invoke(tmp_path, "apply", "--check", path)
    assert result.exit_code == 0, result.output
    assert "+ add" in result.output and "board-pack" in result.output
    assert len([line for line in result.output.splitlines() if line.endswith("UTC")]) == 3
    assert "plan: 1 added, 0 changed, 0 disabled, 0 unchanged" in result.output
    assert not (tmp_path / "data" / "herald.db").exists()


def test_apply_disables_reports_the_file_no_longer_names_and_keeps_history(tmp_path):
    first = [factories.report(id="keep").model_dump(mode="json"), factories.report(id="gone").model_dump(mode="json")]
    assert invoke(tmp_path, "apply", write(tmp_path, first), "--actor", "alice").exit_code == 0
    changed = factories.report(id="keep", name="Renamed").model_dump(mode="json")
    check = invoke(tmp_path, "apply", "--check", write(tmp_path, [changed]))
    lines = [" ".join(line.split()) for line in check.output.splitlines()]
    assert "~ change keep (name)" in lines and "- disable gone" in lines
    assert stored(tmp_path)["gone"].definition.enabled  # --check changed nothing

    result = invoke(tmp_path, "apply", write(tmp_path, [changed]), "--actor", "bob")
    assert result.exit_code == 0, result.output
    assert "plan: 0 added, 1 changed, 1 disabled, 0 unchanged" in result.output
    reports = stored(tmp_path)
    assert reports["keep"].definition.name == "Renamed"
    assert not reports["gone"].definition.enabled and reports["gone"].next_fire_at is None  # kept, not deleted

    entries = [json.loads(line) for line in invoke(tmp_path, "history", "keep").output.splitlines()]
    assert [(e["action"], e["actor"]) for e in entries] == [("add", "alice"), ("change", "bob")]
    assert entries[1]["fields"] == ["name"] and entries[1]["before"] == {"name": "Board pack"}
    assert entries[1]["after"] == {"name": "Renamed"}
    again = invoke(tmp_path, "apply", write(tmp_path, [changed]))
    assert "plan: 0 added, 0 changed, 0 disabled, 1 unchanged" in again.output
    assert len(invoke(tmp_path, "history", "keep").output.splitlines()) == 2  # nothing new recorded


def test_data_file_is_read_relative_to_the_yaml_and_stored_inline(tmp_path, monkeypatch):
    (tmp_path / "defs" / "data").mkdir(parents=True)
    (tmp_path / "defs" / "data" / "kpis.csv").write_text("Metric,Value\nRevenue,12\nMargin,0.4\n")
    source = {"type": "pdf", "title": "KPIs", "data_file": "data/kpis.csv"}
    path = write_file(tmp_path / "defs" / "reports.yaml", [factories.report(source=source).model_dump(mode="json")])
    monkeypatch.chdir(tmp_path)  # neither the YAML's folder nor the data's
    assert invoke(tmp_path, "apply", path).exit_code == 0
    definition = stored(tmp_path)["board-pack"].definition
    assert definition.source.data_file is None
    assert definition.source.data.columns == ["Metric", "Value"]
    assert definition.source.data.rows == [["Revenue", "12"], ["Margin", "0.4"]]
    result = invoke(tmp_path, "run", "board-pack", "--wait")
    assert result.exit_code == 0 and result.output.strip().endswith("succeeded"), result.output


def test_a_missing_data_file_names_the_report_and_applies_nothing(tmp_path):
    source = {"type": "pdf", "data_file": "nope.csv"}
    result = invoke(tmp_path, "apply", write(tmp_path, [factories.report(source=source).model_dump(mode="json")]))
    assert result.exit_code == 2 and "report 'board-pack': source.data_file:" in result.output
    assert "relative to the YAML file" in result.output and "Traceback" not in result.output


def test_a_folder_is_applied_as_one_set_with_unique_ids(tmp_path):
    write_file(tmp_path / "reports" / "a.yaml", [factories.report(id="a").model_dump(mode="json")])
    write_file(tmp_path / "reports" / "b.yml", [factories.report(id="b").model_dump(mode="json")])
    result = invoke(tmp_path, "apply", str(tmp_path / "reports"))
    assert result.exit_code == 0 and "2 added" in result.output, result.output
    write_file(tmp_path / "reports" / "c.yaml", [factories.report(id="a").model_dump(mode="json")])
    dup = invoke(tmp_path, "apply", str(tmp_path / "reports"))
    assert dup.exit_code == 2 and "c.yaml: report 'a': id: already defined in a.yaml" in dup.output


def test_an_empty_folder_is_refused_rather_than_disabling_everything(tmp_path):
    (tmp_path / "reports").mkdir()
    result = invoke(tmp_path, "apply", str(tmp_path / "reports"))
    assert result.exit_code == 2 and "no *.yaml or *.yml definition files" in result.output


def test_offline_check_validates_without_any_store_or_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("HERALD_BACKEND", "gcp")  # no project, no emulator: never contacted
    result = invoke(tmp_path, "apply", "--check", "--offline", "examples/reports.yaml")
    assert result.exit_code == 0 and "3 report(s) valid" in result.output, result.output


def test_apply_on_gcp_without_a_project_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HERALD_BACKEND", "gcp")
    result = invoke(tmp_path, "apply", "examples/reports.yaml")
    assert result.exit_code == 2 and "HERALD_GCP_PROJECT" in result.output
    assert "SECRET_KEY" not in result.output and "Traceback" not in result.output


def waiting_cli(tmp_path, mailer_script=None):
    """The real embedded container on a fake clock; ``sleep`` moves that clock."""
    clock = FakeClock(factories.T0)
    mailer = ScriptedMailer()
    mailer.clock = clock
    mailer.script.update(mailer_script or {})
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        clock.advance(seconds=seconds)

    def build(settings):
        return replace(build_container(settings, clock=clock), mailer=mailer)

    def run(*args):
        return CliRunner().invoke(
            main, ["--data-dir", str(tmp_path / "data"), *args], obj={"clock": clock, "sleep": sleep, "build": build}
        )

    return run, mailer, slept


def transient():
    return DeliveryError("421 try later", permanent=False)


def test_wait_covers_retries_with_progress_lines_and_no_real_sleep(tmp_path):
    cli, mailer, slept = waiting_cli(tmp_path, {"cfo@example.com": [transient(), transient()]})
    cli("apply", write(tmp_path, [factories.report(recipients={"email": ["cfo@example.com"]}).model_dump(mode="json")]))
    result = cli("run", "board-pack", "--wait")
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("succeeded")
    assert "… delivering" in result.output and "next task in" in result.output
    attempts = mailer.attempts["cfo@example.com"]
    assert len(attempts) == 3 and len(mailer.sent["cfo@example.com"]) == 1
    # The second and third attempts came 2 and 8 minutes after the one before (HERALD_RETRY_DELAYS).
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(attempts)]
    assert gaps[0] >= 120 and gaps[1] >= 480
    assert sum(slept) >= 600


def test_wait_exits_1_when_the_run_did_not_succeed(tmp_path):
    cli, _, _ = waiting_cli(tmp_path, {"cfo@example.com": [DeliveryError("550 no such user", permanent=True)]})
    cli("apply", write(tmp_path, [factories.report(recipients={"email": ["cfo@example.com"]}).model_dump(mode="json")]))
    result = cli("run", "board-pack", "--wait")
    assert result.exit_code == 1, result.output
    assert "failed" in result.output.splitlines()[-1]


def test_wait_gives_up_at_the_timeout_with_exit_1(tmp_path):
    forever = [transient() for _ in range(10)]
    cli, _, slept = waiting_cli(tmp_path, {"cfo@example.com": forever})
    cli("apply", write(tmp_path, [factories.report(recipients={"email": ["cfo@example.com"]}).model_dump(mode="json")]))
    result = cli("run", "board-pack", "--wait", "--timeout", "300")
    assert result.exit_code == 1 and "gave up waiting" in result.output
    assert sum(slept) == pytest.approx(300)


@pytest.mark.emulator
def test_apply_on_gcp_needs_only_the_firestore_it_writes(tmp_path, monkeypatch, firestore_emulator):
    project = f"herald-apply-{uuid.uuid4().hex[:8]}"
    for name in ("HERALD_SECRET_KEY", "HERALD_TASKS_WORKER_URL", "HERALD_GCS_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HERALD_BACKEND", "gcp")
    monkeypatch.setenv("HERALD_GCP_PROJECT", project)
    monkeypatch.setenv("HERALD_FIRESTORE_EMULATOR_HOST", firestore_emulator.host)
    try:
        result = invoke(tmp_path, "apply", "examples/reports.yaml", "--actor", "cloudbuild")
        assert result.exit_code == 0, result.output
        assert "3 added" in result.output and "Traceback" not in result.output
        client = firestore_emulator.client(project)
        store = FirestoreStore(client)
        board = store.get_report("board-pack")
        assert board is not None and board.definition.source.data is not None  # the CSV travelled with it
        again = invoke(tmp_path, "apply", "--check", "examples/reports.yaml")
        assert "plan: 0 added, 0 changed, 0 disabled, 3 unchanged" in again.output, again.output
    finally:
        firestore_emulator.reset(project)


def test_a_data_file_outside_the_definitions_folder_is_refused(tmp_path, monkeypatch):
    (tmp_path / "secret.csv").write_text("k,v\napi,s3cret\n")
    source = {"type": "pdf", "data_file": "../secret.csv"}
    path = write_file(tmp_path / "defs" / "reports.yaml", [factories.report(source=source).model_dump(mode="json")])
    refused = invoke(tmp_path, "apply", path)
    assert refused.exit_code == 2 and "is outside" in refused.output and "HERALD_SOURCE_ROOT" in refused.output
    monkeypatch.setenv("HERALD_SOURCE_ROOT", str(tmp_path))  # the operator widens it on purpose
    assert invoke(tmp_path, "apply", path).exit_code == 0
