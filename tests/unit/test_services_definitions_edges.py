"""services/definitions.py edges: a YAML problem is one line naming where and what, every
duplicate id of a folder is told, a file whose inline table holds dates and times is
unchanged when applied again, the history keeps values as the definition's JSON shows
them, and a change recorded without an origin has an empty one."""

from __future__ import annotations

import json

import yaml

from herald.services import definitions as d
from tests.unit import test_services_definitions as base
from tests.unit.test_services_definitions import NOW, doc, problems_of, write

store = base.store  # the fixture: an embedded SQLite store


def dated(tmp_path, name="r.yaml", at="2026-11-02T07:00:00Z"):
    report = doc(source={"type": "pdf", "data": {"columns": ["day", "at"], "rows": [["2026-11-02", "x"]]}})
    text = yaml.safe_dump({"reports": [report]}).replace("'2026-11-02'", "2026-11-02").replace("- x", f"- {at}")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_yaml_problem_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("reports:\n  - id: a\n    name: [unclosed\n")
    (line,) = problems_of(d.load_file, path)
    assert line.startswith(f"{path}: not valid YAML at line 4, column 1: ") and "\n" not in line


def test_every_duplicate_id_of_a_folder_is_told(tmp_path):
    folder = tmp_path / "reports"
    write(folder / "a.yaml", doc(id="x"), doc(id="z"))
    write(folder / "b.yaml", doc(id="x"), doc(id="z"))
    assert problems_of(d.load, folder) == [
        "b.yaml: report 'x': id: already defined in a.yaml",
        "b.yaml: report 'z': id: already defined in a.yaml",
    ]


def test_a_table_with_dates_and_times_is_unchanged_when_applied_again(tmp_path, store):
    path = dated(tmp_path)
    (report,) = d.load_file(path)
    assert not isinstance(report.source.data.rows[0][0], str)  # YAML read a date, and a time
    d.apply(store, d.plan(store.list_reports(), [report], NOW), NOW, "alice")
    again = d.plan(store.list_reports(), d.load_file(path), NOW)
    assert [c.action for c in again.changes] == ["unchanged"]


def test_the_history_keeps_values_as_the_definitions_json_shows_them(tmp_path, store):
    (first,) = d.load_file(dated(tmp_path, "a.yaml", "2026-11-02T07:00:00Z"))
    d.apply(store, d.plan(store.list_reports(), [first], NOW), NOW, "alice")
    (second,) = d.load_file(dated(tmp_path, "b.yaml", "2026-11-03T07:00:00Z"))
    d.apply(store, d.plan(store.list_reports(), [second], NOW), NOW, "alice", origin="ci")
    change = d.history(store, first.id)[-1]
    assert change["fields"] == ["source"] and change["origin"] == "ci"
    assert change["after"] == {"source": json.loads(second.model_dump_json())["source"]}


def test_a_change_recorded_without_an_origin_has_none(store):
    from tests import factories

    d.record_change(store, d.Change("add", factories.report(), None), NOW, "alice")
    (entry,) = d.history(store, "board-pack")
    assert entry["origin"] == "" and entry["actor"] == "alice"
