"""Sources against real things: PDFs parsed back with pypdf, HTTP against a local server, real files."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from herald.adapters.sources import SourceRouter
from herald.adapters.sources.file import FileRenderer
from herald.adapters.sources.http import HttpRenderer
from herald.adapters.sources.pdf import PdfRenderer, pdf_text
from herald.domain.errors import RenderError
from herald.domain.reports import ReportDefinition
from herald.ports.clock import FakeClock
from herald.ports.sources import RenderRequest
from tests.adapters.local_http import Reply, closed_port_url, local_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 12, 2, 7, 0, tzinfo=UTC)
PDF_BYTES = b"%PDF-1.7\n% a report from the reporting API\n%%EOF\n"


def definition(source: dict[str, Any], **overrides: Any) -> ReportDefinition:
    data: dict[str, Any] = {
        "id": "board-pack",
        "name": "Monthly board pack",
        "owner": "cfo@example.com",
        "source": source,
        **overrides,
    }
    return ReportDefinition.model_validate(data)


def request_for(report: ReportDefinition, period: str = "2026-11", **params: str) -> RenderRequest:
    summary = report.summary.format(name=report.name, period=period, rows=0, params=params)
    return RenderRequest(
        definition=report, run_id="r0123456789abcdef01234567", period=period, params=params, summary=summary
    )


def pdf_pages(data: bytes) -> list[str]:
    assert data.startswith(b"%PDF-")
    return [page.extract_text() for page in PdfReader(io.BytesIO(data)).pages]


# --- pdf ---------------------------------------------------------------------------


def pdf_renderer(base_dir: Path) -> PdfRenderer:
    return PdfRenderer(base_dir, clock=FakeClock(NOW))


def test_pdf_has_title_period_summary_generated_time_and_table(tmp_path: Path) -> None:
    report = definition(
        {
            "type": "pdf",
            "title": "Board pack",
            "data": {
                "columns": ["Month", "Revenue", "Gross margin"],
                "rows": [["2026-10", 1250000, "61.5%"], ["2026-11", 1312500.5, "62.1%"]],
            },
        },
        summary="{name}: {rows} months for {period}",
    )
    rendered = pdf_renderer(tmp_path).render(request_for(report))

    text = "\n".join(pdf_pages(rendered.data))
    for expected in [
        "Board pack",
        "Period: 2026-11",
        "Monthly board pack: 2 months for 2026-11",
        "Generated 2026-12-02 07:00 UTC",
        "Month",
        "Gross margin",
        "2026-10",
        "1,250,000",
        "1,312,500.50",
        "62.1%",
    ]:
        assert expected in text
    assert rendered.content_type == "application/pdf"
    assert rendered.filename == "board-pack-2026-11.pdf"
    assert rendered.rows == 2
    assert rendered.summary == "Monthly board pack: 2 months for 2026-11"


def test_pdf_title_defaults_to_the_report_name_and_no_data_still_renders(tmp_path: Path) -> None:
    rendered = pdf_renderer(tmp_path).render(request_for(definition({"type": "pdf"})))

    text = pdf_pages(rendered.data)[0]
    assert "Monthly board pack" in text
    assert "No data table" in text
    assert rendered.rows == 0


def test_pdf_keeps_a_note_the_service_appended_to_the_summary(tmp_path: Path) -> None:
    report = definition({"type": "pdf", "data": {"columns": ["a"], "rows": [[1], [2], [3]]}}, summary="{rows} rows")
    request = RenderRequest(definition=report, run_id="r1", period="2026-11", summary="0 rows (data as of 2026-10-31)")

    rendered = pdf_renderer(tmp_path).render(request)

    assert rendered.summary == "3 rows (data as of 2026-10-31)"
    assert "3 rows (data as of 2026-10-31)" in pdf_pages(rendered.data)[0]


def test_pdf_reads_a_csv_data_file_relative_to_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "kpis-2026-11.csv").write_text(
        '\ufeffmonth,revenue,cash\n2026-11,"1,312,500",4200000\n\n', encoding="utf-8"
    )
    report = definition({"type": "pdf", "data_file": "data/kpis-{period}.csv"})

    rendered = pdf_renderer(tmp_path).render(request_for(report))

    text = pdf_pages(rendered.data)[0]
    assert "month" in text and "1,312,500" in text and "4200000" in text
    assert rendered.rows == 1  # the blank trailing line is not a row


def test_pdf_reads_a_json_list_of_objects(tmp_path: Path) -> None:
    rows = [{"client": "ACME", "tickets": 12}, {"client": "Globex", "tickets": 3, "sla": "98%"}]
    (tmp_path / "weekly.json").write_text(json.dumps(rows))
    report = definition({"type": "pdf", "data_file": "weekly.json"})

    rendered = pdf_renderer(tmp_path).render(request_for(report))

    text = pdf_pages(rendered.data)[0]
    for cell in ["client", "tickets", "sla", "ACME", "Globex", "98%"]:
        assert cell in text
    assert rendered.rows == 2


def test_pdf_with_many_rows_spans_pages_and_repeats_the_header(tmp_path: Path) -> None:
    rows = [[f"Account {i:04d}", i * 10] for i in range(400)]
    report = definition({"type": "pdf", "data": {"columns": ["Account name", "Balance due"], "rows": rows}})

    rendered = pdf_renderer(tmp_path).render(request_for(report))

    pages = pdf_pages(rendered.data)
    assert len(pages) > 1
    assert all("Account name" in page and "Balance due" in page for page in pages)
    assert "Account 0000" in pages[0] and "Account 0399" in pages[-1]
    assert f"page {len(pages)}/{len(pages)}" in pages[-1]


def test_pdf_text_outside_windows_1252_is_transliterated_or_replaced(tmp_path: Path) -> None:
    assert pdf_text("Zürich € \u2013 \u201cok\u201d") == "Zürich € \u2013 \u201cok\u201d"
    assert pdf_text("Łódź Ősz") == "Lódz Osz"  # ó is in Windows-1252, ź and Ő are not
    assert pdf_text("東京") == "??"
    report = definition(
        {"type": "pdf", "title": "Łódź \u2013 東京 €", "data": {"columns": ["Città"], "rows": [["Kraków"]]}}
    )

    text = pdf_pages(pdf_renderer(tmp_path).render(request_for(report)).data)[0]

    assert "Lódz \u2013 ?? €" in text and "Città" in text and "Kraków" in text


@pytest.mark.parametrize(
    ("files", "data_file", "message"),
    [
        ({}, "missing.csv", "not found"),
        ({"kpis.xlsx": "x"}, "kpis.xlsx", ".csv or .json"),
        ({"bad.json": "{not json"}, "bad.json", "invalid JSON"),
        ({"obj.json": '{"a": 1}'}, "obj.json", "list of objects"),
        ({"empty.csv": ""}, "empty.csv", "no header"),
        ({"wide.csv": "a,b\n1,2,3\n"}, "wide.csv", "more cells"),
    ],
)
def test_pdf_bad_data_files_fail_the_render(
    tmp_path: Path, files: dict[str, str], data_file: str, message: str
) -> None:
    for name, content in files.items():
        (tmp_path / name).write_text(content)

    with pytest.raises(RenderError, match=message):
        pdf_renderer(tmp_path).render(request_for(definition({"type": "pdf", "data_file": data_file})))


@pytest.mark.parametrize("name", ["board_pack_kpis.csv", "client_weekly.json"])
def test_the_example_data_files_render(name: str) -> None:
    report = definition({"type": "pdf", "data_file": f"data/{name}"})

    rendered = pdf_renderer(EXAMPLES).render(request_for(report))

    assert rendered.rows > 0
    assert pdf_pages(rendered.data)


# --- http --------------------------------------------------------------------------


def http_definition(url: str, **source: Any) -> ReportDefinition:
    return definition({"type": "http", "url": url, **source})


def test_http_get_returns_the_body_with_summary_and_filename_from_headers() -> None:
    reply = Reply(
        200,
        PDF_BYTES,
        {
            "Content-Type": "application/pdf; charset=binary",
            "Content-Disposition": "attachment; filename*=UTF-8''Bilan%20n%C2%B01%20nov.pdf",
            "X-Report-Summary": "Revenue up 4% — 12 accounts".encode().decode("latin-1"),
            "X-Report-Rows": "12",
        },
    )
    with local_server({"/reports/board": lambda seen: reply}) as server:
        report = http_definition(f"{server.url}/reports/board?format=pdf", headers={"Authorization": "Bearer t0k"})
        rendered = HttpRenderer(allow_private=True).render(request_for(report, region="emea"))

    assert rendered.data == PDF_BYTES
    assert rendered.content_type == "application/pdf"
    assert rendered.summary == "Revenue up 4% — 12 accounts"
    assert rendered.rows == 12
    assert rendered.filename == "Bilan_n_1_nov.pdf"
    (seen,) = server.seen
    assert seen.method == "GET"
    assert seen.query == {
        "format": ["pdf"],
        "region": ["emea"],
        "period": ["2026-11"],
        "run_id": ["r0123456789abcdef01234567"],
    }
    assert seen.headers["Authorization"] == "Bearer t0k"
    assert seen.headers["Accept"] == "application/pdf"


def test_http_post_sends_params_as_json_and_names_the_file_after_report_and_period() -> None:
    csv = b"month,revenue\n2026-11,1\n"
    with local_server({"/render": lambda seen: Reply(200, csv, {"Content-Type": "text/csv"})}) as server:
        report = http_definition(f"{server.url}/render", method="POST", content_types=["text/csv"])
        rendered = HttpRenderer(allow_private=True).render(request_for(report, client="acme"))

    assert (rendered.data, rendered.content_type, rendered.filename) == (csv, "text/csv", "board-pack-2026-11.csv")
    assert rendered.summary is None
    assert server.seen[0].json() == {"client": "acme", "period": "2026-11", "run_id": "r0123456789abcdef01234567"}


def test_http_content_disposition_cannot_escape_the_report_folder() -> None:
    reply = Reply(
        200,
        PDF_BYTES,
        {"Content-Type": "application/pdf", "Content-Disposition": 'attachment; filename="../../etc/passwd"'},
    )
    with local_server({"/r": lambda seen: reply}) as server:
        rendered = HttpRenderer(allow_private=True).render(request_for(http_definition(f"{server.url}/r")))

    assert rendered.filename == "passwd"


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(500, b"warehouse unavailable", {"Content-Type": "text/plain"}), "HTTP 500: warehouse unavailable"),
        (Reply(404, b""), "HTTP 404"),
        (Reply(200, b"", {"Content-Type": "application/pdf"}), "empty body"),
        (Reply(200, b"<html>login</html>", {"Content-Type": "text/html"}), "content type 'text/html'"),
        (Reply(200, PDF_BYTES), "content type '\\(none\\)'"),
        (Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"}, hold=True), "timed out after 0.2s"),
    ],
    ids=["500", "404", "empty", "wrong-type", "no-type", "slow"],
)
def test_http_failures_are_render_errors(reply: Reply, message: str) -> None:
    with local_server({"/r": lambda seen: reply}) as server:
        report = http_definition(f"{server.url}/r?api_key=s3cret", timeout_seconds=0.2)
        with pytest.raises(RenderError, match=message) as caught:
            HttpRenderer(allow_private=True).render(request_for(report))

    assert "s3cret" not in str(caught.value)


def test_http_connection_refused_is_a_render_error() -> None:
    report = http_definition(f"{closed_port_url()}/r?api_key=s3cret", timeout_seconds=2)

    with pytest.raises(RenderError, match="unreachable: ConnectionError") as caught:
        HttpRenderer(allow_private=True).render(request_for(report))

    assert "s3cret" not in str(caught.value)


def test_http_accepts_wildcard_content_types() -> None:
    sheet = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    with local_server({"/r": lambda seen: Reply(200, b"PK\x03\x04", {"Content-Type": sheet})}) as server:
        report = http_definition(f"{server.url}/r", content_types=["application/pdf", "application/*"])
        rendered = HttpRenderer(allow_private=True).render(request_for(report))

    assert rendered.filename == "board-pack-2026-11.xlsx"


def test_http_refuses_a_body_larger_than_the_limit() -> None:
    big = Reply(200, b"x" * 5000, {"Content-Type": "application/pdf"})
    with local_server({"/r": lambda seen: big}) as server, pytest.raises(RenderError, match="more than 1,024 bytes"):
        HttpRenderer(max_bytes=1024, allow_private=True).render(request_for(http_definition(f"{server.url}/r")))


# --- file --------------------------------------------------------------------------


def file_definition(path: str, **source: Any) -> ReportDefinition:
    return definition({"type": "file", "path": path, **source})


def test_file_reads_the_period_file_relative_to_the_base_dir(tmp_path: Path) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "pnl-2026-11.pdf").write_bytes(PDF_BYTES)
    (tmp_path / "exports" / "pnl-2026-10.pdf").write_bytes(b"%PDF- last month")

    rendered = FileRenderer(tmp_path).render(request_for(file_definition("exports/pnl-{period}.pdf")))

    assert (rendered.data, rendered.filename, rendered.content_type) == (
        PDF_BYTES,
        "pnl-2026-11.pdf",
        "application/pdf",
    )


def test_file_uses_the_declared_content_type(tmp_path: Path) -> None:
    (tmp_path / "ar.csv").write_text("a\n1\n")

    rendered = FileRenderer(tmp_path).render(request_for(file_definition("ar.csv", content_type="text/csv")))

    assert rendered.content_type == "text/csv"


@pytest.mark.parametrize(
    ("setup", "message"),
    [("nothing", "not found"), ("empty", "is empty"), ("directory", "not a regular file")],
)
def test_file_missing_empty_or_not_a_file_fails(tmp_path: Path, setup: str, message: str) -> None:
    target = tmp_path / "pnl-2026-11.pdf"
    if setup == "empty":
        target.write_bytes(b"")
    elif setup == "directory":
        target.mkdir()

    with pytest.raises(RenderError, match=message):
        FileRenderer(tmp_path).render(request_for(file_definition("pnl-{period}.pdf")))


# --- router ------------------------------------------------------------------------


def test_router_dispatches_on_the_source_type(tmp_path: Path) -> None:
    (tmp_path / "pnl-2026-11.pdf").write_bytes(PDF_BYTES)
    router = SourceRouter(base_dir=tmp_path, timeout_seconds=2, clock=FakeClock(NOW), allow_private=True)

    from_file = router.render(request_for(file_definition("pnl-{period}.pdf")))
    built = router.render(request_for(definition({"type": "pdf"})))
    with local_server({"/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"})}) as server:
        fetched = router.render(request_for(http_definition(f"{server.url}/r")))

    assert from_file.data == PDF_BYTES == fetched.data
    assert "Monthly board pack" in pdf_pages(built.data)[0]


def test_router_turns_a_renderer_crash_into_a_render_error(tmp_path: Path) -> None:
    class BrokenClock:
        def now(self) -> datetime:
            raise RuntimeError("clock unplugged")

    router = SourceRouter(base_dir=tmp_path, clock=BrokenClock())

    with pytest.raises(RenderError, match="pdf source failed unexpectedly: RuntimeError: clock unplugged"):
        router.render(request_for(definition({"type": "pdf"})))


# --- confinement (issue 11) ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "../outside.pdf", "link.pdf", "sub/../../outside.pdf"])
def test_file_sources_read_only_under_the_root(tmp_path: Path, path: str) -> None:
    root = tmp_path / "defs"
    root.mkdir()
    (tmp_path / "outside.pdf").write_bytes(PDF_BYTES)
    (root / "link.pdf").symlink_to(tmp_path / "outside.pdf")
    with pytest.raises(RenderError, match="outside the source root"):
        FileRenderer(root).render(request_for(file_definition(path)))


def test_a_configured_root_admits_absolute_paths_under_it(tmp_path: Path) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "pnl-2026-11.pdf").write_bytes(PDF_BYTES)
    renderer = FileRenderer(tmp_path / "defs", root=exports)
    assert renderer.render(request_for(file_definition(str(exports / "pnl-{period}.pdf")))).data == PDF_BYTES
    with pytest.raises(RenderError, match="outside the source root"):
        renderer.render(request_for(file_definition("/etc/hostname")))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://[fe80::1]/r",
        "http://[::ffff:169.254.169.254]/r",
        "http://0.0.0.0/r",
        "ftp://reports.example.com/r",
    ],
)
def test_definitions_refuse_metadata_link_local_and_odd_targets(url: str) -> None:
    with pytest.raises(ValueError, match=r"http\.url"):
        http_definition(url)
    with pytest.raises(ValueError, match="heartbeat_url"):
        definition({"type": "pdf"}, heartbeat_url=url)


def test_slack_webhook_targets_are_checked_too() -> None:
    with pytest.raises(ValueError, match="slack"):
        definition({"type": "pdf"}, recipients={"slack": ["https://169.254.169.254/services/x"]})


def test_loopback_and_private_targets_need_the_setting() -> None:
    with local_server({"/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"})}) as server:
        report = http_definition(f"{server.url}/r")
        with pytest.raises(RenderError, match="private or loopback"):
            HttpRenderer().render(request_for(report))
        assert server.seen == []  # refused before a byte was sent
        assert HttpRenderer(allow_private=True).render(request_for(report)).data == PDF_BYTES


def test_a_name_that_resolves_to_loopback_is_refused_at_connect_time() -> None:
    # "2130706433" passes the URL check (it is a name, not an IP literal), but the C
    # resolver turns it into 127.0.0.1: the address actually connected to is what counts.
    with local_server({"/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"})}) as server:
        port = server.url.rsplit(":", 1)[1]
        with pytest.raises(RenderError, match=r"resolved to 127\.0\.0\.1 is a private or loopback"):
            HttpRenderer().render(request_for(http_definition(f"http://2130706433:{port}/r")))
        assert server.seen == []


def test_redirects_are_rechecked_and_bounded() -> None:
    routes = {
        "/to-metadata": lambda seen: Reply(302, b"", {"Location": "http://169.254.169.254/latest/meta-data/"}),
        "/loop": lambda seen: Reply(302, b"", {"Location": "/loop"}),
        "/hop": lambda seen: Reply(307, b"", {"Location": "/r"}),
        "/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"}),
    }
    with local_server(routes) as server:
        renderer = HttpRenderer(allow_private=True)
        with pytest.raises(RenderError, match="metadata"):
            renderer.render(request_for(http_definition(f"{server.url}/to-metadata")))
        with pytest.raises(RenderError, match="more than 5 redirects"):
            renderer.render(request_for(http_definition(f"{server.url}/loop")))
        assert len([s for s in server.seen if s.path == "/loop"]) == 6
        assert renderer.render(request_for(http_definition(f"{server.url}/hop", method="POST"))).data == PDF_BYTES
        assert server.seen[-1].path == "/r" and server.seen[-1].method == "POST"


def test_env_references_are_resolved_when_the_request_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_TEST_REPORTS_TOKEN", "tok-from-env")
    monkeypatch.setenv("HERALD_TEST_REPORTS_KEY", "key-from-env")
    with local_server({"/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"})}) as server:
        report = http_definition(
            f"{server.url}/r?key=${{env:HERALD_TEST_REPORTS_KEY}}",
            headers={"Authorization": "Bearer ${env:HERALD_TEST_REPORTS_TOKEN}"},
        )
        HttpRenderer(allow_private=True).render(request_for(report))
        (seen,) = server.seen
    assert seen.headers["Authorization"] == "Bearer tok-from-env" and seen.query["key"] == ["key-from-env"]
    assert report.source.headers["Authorization"] == "Bearer ${env:HERALD_TEST_REPORTS_TOKEN}"  # never stored resolved
    monkeypatch.delenv("HERALD_TEST_REPORTS_TOKEN")
    with pytest.raises(RenderError, match="HERALD_TEST_REPORTS_TOKEN is not set"):
        HttpRenderer(allow_private=True).render(request_for(report))


def test_debug_logs_of_urllib3_carry_no_query_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    with local_server({"/r": lambda seen: Reply(200, PDF_BYTES, {"Content-Type": "application/pdf"})}) as server:
        HttpRenderer(allow_private=True).render(request_for(http_definition(f"{server.url}/r?api_key=key-abc123")))
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("/r?REDACTED" in line for line in urllib3_lines), urllib3_lines
    assert "key-abc123" not in caplog.text


def test_summary_headers_from_the_provider_lose_control_characters() -> None:
    reply = Reply(200, PDF_BYTES, {"Content-Type": "application/pdf", "X-Report-Summary": "ok\x07 \x1b[31mred"})
    with local_server({"/r": lambda seen: reply}) as server:
        rendered = HttpRenderer(allow_private=True).render(request_for(http_definition(f"{server.url}/r")))
    assert rendered.summary is not None and "\x07" not in rendered.summary and "\x1b" not in rendered.summary


def test_check_resolved_judges_every_address_a_name_has() -> None:
    from herald.adapters.net_guard import TargetRefused, check_resolved

    # userinfo is not the host: "hooks.slack.com@2130706433" goes to 127.0.0.1
    with pytest.raises(TargetRefused, match="resolves to 127"):
        check_resolved("https://hooks.slack.com@2130706433/services/x", False)
    with pytest.raises(TargetRefused, match="loopback"):
        check_resolved("http://2130706433/hook", False)
    check_resolved("http://2130706433/hook", True)  # allowed by the setting
