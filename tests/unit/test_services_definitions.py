"""services/definitions.py called directly (the CLI tests drive it through `herald apply`,
which mutation testing leaves out): loading, resolving references, planning, applying,
history. The promise is README "Report definitions": a file or a folder of *.yaml / *.yml,
validated as a whole, errors name the report (and, in a folder, the file); data files are
read relative to the YAML and stored inline; reports no longer named are disabled, never
deleted; each applied change is kept with who, when and the fields before and after."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from herald.adapters.embedded.sqlite_store import SQLiteStore
from herald.domain.reports import DefinitionError, PdfSource
from herald.services import definitions as d
from tests import factories

NOW = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # 06:00 UTC = 06:00 London: the 07:00 slot is next
SEVEN = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def doc(**overrides: Any) -> dict[str, Any]:
    return factories.report(**overrides).model_dump(mode="json", exclude_none=True)


def write(path: Path, *reports: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"reports": list(reports)}))
    return path


def problems_of(call: Any, *args: Any) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        call(*args)
    return list(info.value.problems)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "herald.db")


# Loading ------------------------------------------------------------------------------
def test_a_folder_means_its_yaml_and_yml_files_sorted_and_nothing_else(tmp_path):
    folder = tmp_path / "reports"
    for name in ("b.yml", "a.yaml", "notes.txt", "c.YAML.bak"):
        write(folder / name, doc(id=name.split(".")[0].lower()))
    (folder / "nested.yaml").mkdir()  # a folder named like a file is not a file
    assert d.definition_files(folder) == [folder / "a.yaml", folder / "b.yml"]
    assert d.definition_files(folder / "a.yaml") == [folder / "a.yaml"]


def test_an_empty_folder_is_an_error_not_an_empty_set(tmp_path):
    (tmp_path / "empty").mkdir()
    assert problems_of(d.definition_files, tmp_path / "empty") == [
        f"{tmp_path / 'empty'}: no *.yaml or *.yml definition files in this folder"
    ]


def test_a_missing_file_names_the_path_and_the_cause(tmp_path):
    missing = tmp_path / "nope.yaml"
    assert problems_of(d.load_file, missing) == [f"{missing}: cannot read (No such file or directory)"]


def test_malformed_yaml_names_the_line_and_column(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("reports:\n  - id: a\n    name: [unclosed\n")
    (line,) = problems_of(d.load_file, path)
    assert line.startswith(f"{path}: not valid YAML at line ")
    assert "column" in line
    # The position is 1-based, as editors show it: the parser stops at line 4 (the end).
    assert " at line 4, column 1: " in line


def test_yaml_errors_without_a_position_still_name_the_file(tmp_path, monkeypatch):
    path = write(tmp_path / "r.yaml", doc())

    def boom(_: str) -> Any:
        raise yaml.YAMLError("exploded")

    monkeypatch.setattr(d.yaml, "safe_load", boom)
    assert problems_of(d.load_file, path) == [f"{path}: not valid YAML: exploded"]


def test_a_valid_file_loads_every_report(tmp_path):
    path = write(tmp_path / "r.yaml", doc(id="a"), doc(id="b"))
    assert [r.id for r in d.load_file(path)] == ["a", "b"]
    assert [r.id for r in d.load(path)] == ["a", "b"]


def test_every_reference_problem_of_a_file_is_reported_at_once(tmp_path):
    path = write(
        tmp_path / "r.yaml",
        doc(id="a", source={"type": "pdf", "data_file": "missing-a.csv"}),
        doc(id="b", source={"type": "pdf", "data_file": "missing-b.csv"}),
        doc(id="c"),
    )
    lines = problems_of(d.load_file, path)
    assert len(lines) == 2
    assert lines[0].startswith("report 'a': source.data_file: ") and "missing-a.csv not found" in lines[0]
    assert lines[1].startswith("report 'b': source.data_file: ")


def test_in_a_folder_each_problem_names_its_file_once(tmp_path):
    folder = tmp_path / "reports"
    write(folder / "a.yaml", doc(id="a"))
    write(folder / "b.yaml", doc(id="b", source={"type": "pdf", "data_file": "gone.csv"}))
    (folder / "c.yaml").write_text("reports: [\n")
    lines = problems_of(d.load, folder)
    assert len(lines) == 2
    assert lines[0].startswith("b.yaml: report 'b': source.data_file: ")
    # A line that already starts with the file's path is not prefixed a second time.
    assert lines[1].startswith(f"{folder / 'c.yaml'}: not valid YAML")


def test_a_single_file_problem_carries_no_file_prefix(tmp_path):
    path = write(tmp_path / "r.yaml", doc(id="b", source={"type": "pdf", "data_file": "gone.csv"}))
    (line,) = problems_of(d.load, path)
    assert line.startswith("report 'b': source.data_file: ")


def test_ids_are_unique_across_the_files_of_a_folder(tmp_path):
    folder = tmp_path / "reports"
    write(folder / "a.yaml", doc(id="x"), doc(id="y"))
    write(folder / "b.yaml", doc(id="x"), doc(id="z"))
    assert problems_of(d.load, folder) == ["b.yaml: report 'x': id: already defined in a.yaml"]
    write(folder / "b.yaml", doc(id="z"))
    assert [r.id for r in d.load(folder)] == ["x", "y", "z"]


# References ---------------------------------------------------------------------------
def test_a_csv_data_file_is_read_relative_to_the_yaml_and_stored_inline(tmp_path, monkeypatch):
    (tmp_path / "defs" / "data").mkdir(parents=True)
    (tmp_path / "defs" / "data" / "kpis.csv").write_text("Metric,Value\nRevenue,12\n\nMargin,0.4\n")
    source = {"type": "pdf", "title": "KPIs", "data_file": "data/kpis.csv"}
    path = write(tmp_path / "defs" / "r.yaml", doc(source=source))
    monkeypatch.chdir(tmp_path)  # neither the YAML's folder nor the data's
    (report,) = d.load(path)
    assert isinstance(report.source, PdfSource)
    assert report.source.data_file is None and report.source.title == "KPIs"
    assert report.source.data is not None
    assert report.source.data.columns == ["Metric", "Value"]
    assert report.source.data.rows == [["Revenue", "12"], ["Margin", "0.4"]]


def test_a_json_data_file_of_objects_and_one_of_columns_and_rows(tmp_path):
    (tmp_path / "objects.json").write_text(json.dumps([{"a": 1, "b": 2}, {"b": 3, "c": 4}]))
    (tmp_path / "table.json").write_text(json.dumps({"columns": [1, "two"], "rows": [[1, 2], 7]}))
    objects = d.resolve_references(factories.report(source={"type": "pdf", "data_file": "objects.json"}), tmp_path)
    assert objects.source.data.columns == ["a", "b", "c"]  # type: ignore[union-attr]
    assert objects.source.data.rows == [[1, 2, None], [None, 3, 4]]  # type: ignore[union-attr]
    table = d.resolve_references(factories.report(source={"type": "pdf", "data_file": "table.json"}), tmp_path)
    assert table.source.data.columns == ["1", "two"]  # type: ignore[union-attr]
    assert table.source.data.rows == [[1, 2], [7]]  # type: ignore[union-attr]


def test_data_file_problems_are_one_readable_line(tmp_path):
    (tmp_path / "data.txt").write_text("a,b\n")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "latin.csv").write_bytes("Name\nZ\xfcrich\n".encode("latin-1"))
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(ValueError) as suffix:
        d.read_table(tmp_path / "data.txt")
    assert str(suffix.value) == "source.data_file: data.txt: use a .csv or .json file"
    with pytest.raises(ValueError) as missing:
        d.read_table(tmp_path / "none.csv")
    assert str(missing.value) == (
        f"source.data_file: {tmp_path / 'none.csv'} not found (paths are relative to the YAML file)"
    )
    with pytest.raises(ValueError) as not_a_file:
        d.read_table(tmp_path / "folder.csv")
    assert "not found" in str(not_a_file.value)
    with pytest.raises(ValueError) as invalid:
        d.read_table(tmp_path / "bad.json")
    assert str(invalid.value).startswith("source.data_file: data file bad.json: invalid JSON (")
    with pytest.raises(ValueError) as undecodable:
        d.read_table(tmp_path / "latin.csv")
    assert str(undecodable.value).startswith("source.data_file: latin.csv: cannot read (")


def test_the_suffix_is_matched_without_regard_to_case(tmp_path):
    (tmp_path / "KPIS.CSV").write_text("A\n1\n")
    assert d.read_table(tmp_path / "KPIS.CSV") == (["A"], [["1"]])


def test_a_period_data_file_becomes_an_absolute_path_and_is_not_read(tmp_path):
    report = factories.report(source={"type": "pdf", "title": "T", "data_file": "data/{period}.csv"})
    resolved = d.resolve_references(report, tmp_path)
    assert resolved.source.data_file == str(tmp_path / "data" / "{period}.csv")  # type: ignore[union-attr]
    assert resolved.source.data is None and resolved.source.title == "T"  # type: ignore[union-attr]


def test_an_absolute_data_file_is_read_where_it_is(tmp_path):
    (tmp_path / "abs.csv").write_text("A\n1\n")
    report = factories.report(source={"type": "pdf", "data_file": str(tmp_path / "abs.csv")})
    resolved = d.resolve_references(report, tmp_path / "elsewhere", root=tmp_path)
    assert resolved.source.data.rows == [["1"]]  # type: ignore[union-attr]


def test_a_file_source_path_becomes_absolute_and_an_absolute_one_stays(tmp_path):
    relative = factories.report(source={"type": "file", "path": "out/{period}.pdf", "content_type": "text/csv"})
    resolved = d.resolve_references(relative, tmp_path)
    assert resolved.source.path == str(tmp_path / "out" / "{period}.pdf")  # type: ignore[union-attr]
    assert resolved.source.content_type == "text/csv"  # type: ignore[union-attr]
    absolute = factories.report(source={"type": "file", "path": str(tmp_path / "x.pdf")})
    assert d.resolve_references(absolute, tmp_path / "sub", root=tmp_path).source.path == str(tmp_path / "x.pdf")  # type: ignore[union-attr]


def test_inline_and_http_sources_are_left_as_they_are(tmp_path):
    inline = factories.report()
    assert d.resolve_references(inline, tmp_path) == inline


def test_references_outside_the_root_are_refused_and_the_root_can_be_widened(tmp_path):
    (tmp_path / "secret.csv").write_text("k,v\napi,s3cret\n")
    defs = tmp_path / "defs"
    defs.mkdir()
    climbing = factories.report(source={"type": "pdf", "data_file": "../secret.csv"})
    with pytest.raises(ValueError) as refused:
        d.resolve_references(climbing, defs)
    assert str(refused.value) == (
        f"source.data_file: {defs / '../secret.csv'} is outside {defs.resolve()}"
        " (set HERALD_SOURCE_ROOT to allow another folder)"
    )
    widened = d.resolve_references(climbing, defs, root=tmp_path)
    assert widened.source.data.rows == [["api", "s3cret"]]  # type: ignore[union-attr]
    file_source = factories.report(source={"type": "file", "path": "/etc/{period}/passwd"})
    with pytest.raises(ValueError) as file_refused:
        d.resolve_references(file_source, defs)
    assert str(file_refused.value).startswith("source.path: /etc/{period}/passwd is outside ")
    period_climb = factories.report(source={"type": "pdf", "data_file": "../{period}.csv"})
    with pytest.raises(ValueError, match="is outside"):
        d.resolve_references(period_climb, defs)
    assert d.resolve_references(period_climb, defs, root=tmp_path).source.data_file == str(defs / "../{period}.csv")  # type: ignore[union-attr]


def test_load_confines_to_the_given_root_not_only_the_yaml_folder(tmp_path):
    (tmp_path / "common.csv").write_text("A\n1\n")
    path = write(tmp_path / "defs" / "r.yaml", doc(source={"type": "pdf", "data_file": "../common.csv"}))
    (line,) = problems_of(d.load, path)
    assert line.startswith("report 'board-pack': source.data_file: ") and "is outside" in line
    assert d.load(path, tmp_path)[0].source.data.rows == [["1"]]  # type: ignore[union-attr]
    assert d.load_file(path, tmp_path)[0].source.data.rows == [["1"]]  # type: ignore[union-attr]


# Planning -----------------------------------------------------------------------------
def test_initial_fire_time_is_the_next_slot_for_enabled_scheduled_reports_only():
    assert d.initial_fire_time(factories.report(), NOW) == SEVEN
    assert d.initial_fire_time(factories.report(enabled=False), NOW) is None
    assert d.initial_fire_time(factories.report(schedule=None), NOW) is None


def test_a_schedule_keeps_its_next_fire_time_unless_schedule_or_enabled_changed():
    kept = SEVEN + timedelta(days=3)  # e.g. a slot the tick has not reached yet
    current = d.StoredReport(factories.report(), kept)
    assert d.next_fire_for(current, factories.report(name="Renamed"), NOW) == kept
    moved = factories.report(schedule={"cron": "30 8 * * *", "timezone": "Europe/London"})
    assert d.next_fire_for(current, moved, NOW) == SEVEN + timedelta(hours=1, minutes=30)
    assert d.next_fire_for(current, factories.report(enabled=False), NOW) is None
    assert d.next_fire_for(None, factories.report(), NOW) == SEVEN
    never_fired = d.StoredReport(factories.report(), None)  # e.g. it was disabled before
    assert d.next_fire_for(never_fired, factories.report(), NOW) == SEVEN


def test_changed_fields_are_the_top_level_fields_that_differ():
    before = factories.report()
    after = factories.report(name="Renamed", owner="ceo@example.com")
    assert d.changed_fields(before, after) == ("name", "owner")
    assert d.changed_fields(before, before) == ()


def test_the_plan_says_added_changed_unchanged_and_disabled_before_writing(store):
    kept = SEVEN + timedelta(days=1)
    current = [
        d.StoredReport(factories.report(id="same"), kept),
        d.StoredReport(factories.report(id="edit"), kept),
        d.StoredReport(factories.report(id="gone"), kept),
        d.StoredReport(factories.report(id="off", enabled=False), None),
    ]
    wanted = [factories.report(id="same"), factories.report(id="edit", name="New"), factories.report(id="new")]
    planned = d.plan(current, wanted, NOW)
    assert [(c.action, c.definition.id) for c in planned.changes] == [
        ("unchanged", "same"),
        ("change", "edit"),
        ("add", "new"),
        ("disable", "gone"),  # "off" is already disabled: nothing to do
    ]
    same, edit, new, gone = planned.changes
    assert same.fields == () and same.before == current[0].definition and same.next_fire_at == kept
    assert edit.fields == ("name",) and edit.before == current[1].definition and edit.next_fire_at == kept
    assert new.fields == () and new.before is None and new.next_fire_at == SEVEN
    assert gone.fields == ("enabled",) and gone.next_fire_at is None
    assert gone.definition.enabled is False and gone.before == current[2].definition
    assert gone.definition.model_copy(update={"enabled": True}) == current[2].definition  # only switched off
    assert [c.definition.id for c in planned.of("change")] == ["edit"]
    assert planned.summary() == "1 added, 1 changed, 1 disabled, 1 unchanged"
    assert store.list_reports() == []  # planning writes nothing


def test_without_prune_the_reports_not_named_are_left_alone():
    current = [d.StoredReport(factories.report(id="gone"), SEVEN)]
    planned = d.plan(current, [factories.report(id="new")], NOW, prune=False)
    assert [(c.action, c.definition.id) for c in planned.changes] == [("add", "new")]
    assert d.Plan().summary() == "0 added, 0 changed, 0 disabled, 0 unchanged"


def test_disabled_reports_are_pruned_in_id_order():
    current = [d.StoredReport(factories.report(id=i), SEVEN) for i in ("zz", "aa", "mm")]
    planned = d.plan(current, [], NOW)
    assert [c.definition.id for c in planned.changes] == ["aa", "mm", "zz"]


def test_describe_prints_one_aligned_line_per_change():
    report = factories.report()
    assert d.describe(d.Change("add", report, SEVEN)) == "+ add        board-pack"
    assert d.describe(d.Change("change", report, SEVEN, ("name", "owner"))) == "~ change     board-pack (name, owner)"
    assert d.describe(d.Change("disable", report, None, ("enabled",))) == "- disable    board-pack"
    assert d.describe(d.Change("unchanged", report, SEVEN)) == "= unchanged  board-pack"


# Applying and history -----------------------------------------------------------------
def test_apply_writes_the_plan_and_keeps_who_when_and_what(store):
    first = d.plan(store.list_reports(), [factories.report(id="keep"), factories.report(id="gone")], NOW)
    saved = d.apply(store, first, NOW, "alice", origin="reports/")
    assert [(s.definition.id, s.next_fire_at) for s in saved] == [("keep", SEVEN), ("gone", SEVEN)]
    later = NOW + timedelta(hours=2)
    second = d.plan(store.list_reports(), [factories.report(id="keep", name="Renamed")], later)
    d.apply(store, second, later, "bob")
    reports = {s.definition.id: s for s in store.list_reports()}
    assert reports["keep"].definition.name == "Renamed" and reports["keep"].next_fire_at == SEVEN
    assert reports["gone"].definition.enabled is False and reports["gone"].next_fire_at is None  # kept

    keep = d.history(store, "keep")
    assert [(e["n"], e["action"], e["actor"], e["at"]) for e in keep] == [
        (1, "add", "alice", NOW.isoformat()),
        (2, "change", "bob", later.isoformat()),
    ]
    added, changed = keep
    assert added["report_id"] == "keep" and added["origin"] == "reports/" and changed["origin"] == ""
    assert added["fields"] == [] and added["before"] is None and added["after"] is None
    assert changed["fields"] == ["name"]
    assert changed["before"] == {"name": "Board pack"} and changed["after"] == {"name": "Renamed"}
    assert added["digest"] != changed["digest"]
    gone = d.history(store, "gone")
    assert [e["action"] for e in gone] == ["add", "disable"]
    assert gone[1]["before"] == {"enabled": True} and gone[1]["after"] == {"enabled": False}
    assert d.history(store, "never") == []

    third = d.plan(store.list_reports(), [factories.report(id="keep", name="Renamed")], later)
    assert third.summary() == "0 added, 0 changed, 0 disabled, 1 unchanged"  # gone is already disabled
    saved = d.apply(store, third, later, "carol")
    assert [(s.definition.id, s.next_fire_at) for s in saved] == [("keep", SEVEN)]
    assert len(d.history(store, "keep")) == 2  # unchanged: nothing written, nothing recorded


def test_digest_identifies_a_definition():
    a, b = factories.report(), factories.report(name="Other")
    assert d.digest(a) == d.digest(factories.report())
    assert d.digest(a) != d.digest(b)
    assert len(d.digest(a)) == 16 and int(d.digest(a), 16) >= 0


def test_upsert_saves_as_given_and_keeps_a_fire_time(store):
    assert [(s.definition.id, s.next_fire_at) for s in d.upsert(store, [factories.report()], NOW)] == [
        ("board-pack", SEVEN)
    ]
    again = d.upsert(store, [factories.report(name="Renamed")], NOW + timedelta(days=5))
    assert again[0].next_fire_at == SEVEN
    stored = store.get_report("board-pack")
    assert stored is not None and stored.definition.name == "Renamed" and stored.next_fire_at == SEVEN
    assert d.history(store, "board-pack") == []  # no history on this path


class FullHistory:
    """A store whose every history slot is taken (put_inbound_event never creates)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def put_inbound_event(self, kind: str, event_id: str, doc: dict[str, Any], now: datetime) -> bool:
        assert kind == "definition-change"
        self.asked.append(event_id)
        return False

    def get_inbound_event(self, kind: str, event_id: str) -> dict[str, Any] | None:
        assert kind == "definition-change"
        self.asked.append(event_id)
        return {"action": "change"}


def test_history_is_bounded_at_max_history_entries():
    full = FullHistory()
    change = d.Change("add", factories.report(), SEVEN)
    with pytest.raises(RuntimeError) as info:
        d.record_change(full, change, NOW, "alice")  # type: ignore[arg-type]
    assert str(info.value) == f"report 'board-pack': more than {d.MAX_HISTORY} recorded changes"
    assert full.asked[0] == "board-pack:1" and full.asked[-1] == f"board-pack:{d.MAX_HISTORY}"
    assert len(full.asked) == d.MAX_HISTORY
    reader = FullHistory()
    entries = d.history(reader, "board-pack")  # type: ignore[arg-type]
    assert len(entries) == d.MAX_HISTORY and entries[0]["n"] == 1 and entries[-1]["n"] == d.MAX_HISTORY
    assert d.MAX_HISTORY == 10_000


def test_record_change_claims_the_next_number(store):
    change = d.Change("add", factories.report(), SEVEN)
    assert [d.record_change(store, change, NOW, "a") for _ in range(3)] == [1, 2, 3]
