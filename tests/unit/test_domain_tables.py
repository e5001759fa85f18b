"""domain/tables.py: the data files a local-file source reads (README "Report definitions":
CSV with a header row, or JSON, a list of objects or {columns, rows}). What spreadsheet
exports contain — a byte-order mark, quoted cells with line breaks — reads as the people
who wrote them see it; a file without data is refused by name, not with a crash."""

from __future__ import annotations

import pytest

from herald.domain.errors import RenderError
from herald.domain.tables import load_csv, load_json


def test_a_csv_saved_by_excel_with_a_byte_order_mark_has_clean_column_names(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_bytes(b"\xef\xbb\xbfregion,total\r\nemea,10\r\n")
    assert load_csv(path) == (["region", "total"], [["emea", "10"]])


def test_a_quoted_csv_cell_keeps_its_line_break(tmp_path):
    # The csv module's rule: open with newline="" or a quoted "\r\n" is read as "\n".
    path = tmp_path / "notes.csv"
    path.write_bytes(b'name,note\r\nx,"line one\r\nline two"\r\n')
    assert load_csv(path) == (["name", "note"], [["x", "line one\r\nline two"]])


@pytest.mark.parametrize("content", [b"", b" , \r\nemea,10\r\n"], ids=["empty", "blank header row"])
def test_a_csv_without_a_header_row_is_refused_by_name(tmp_path, content):
    path = tmp_path / "sales.csv"
    path.write_bytes(content)
    with pytest.raises(RenderError, match=r"data file sales\.csv: no header row"):
        load_csv(path)


def test_a_csv_with_only_its_header_has_no_rows(tmp_path):
    path = tmp_path / "sales.csv"
    path.write_bytes(b"region,total\r\n")
    assert load_csv(path) == (["region", "total"], [])


def test_a_json_file_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "sales.json"
    path.write_bytes(b'\xef\xbb\xbf[{"region": "emea", "total": 10}]')
    assert load_json(path) == (["region", "total"], [["emea", 10]])


@pytest.mark.parametrize("document", ["[1, 2]", '{"rows": []}', '"text"'])
def test_json_that_is_not_a_list_of_objects_is_refused_by_name(tmp_path, document):
    path = tmp_path / "sales.json"
    path.write_text(document)
    with pytest.raises(RenderError, match=r"data file sales\.json: expected a list of objects"):
        load_json(path)
