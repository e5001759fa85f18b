"""Built-in PDF source: title, period, summary line, generated time and a data table.

Text uses fpdf2's core Helvetica with the Windows-1252 (WinAnsi) encoding: no font file
is bundled or downloaded, so the output is the same on every machine. Characters that
Windows-1252 lacks are transliterated when Unicode decomposition yields a base letter
("ő" → "o", U+2212 MINUS → "-") and otherwise replaced by "?" — never a crash mid-render.
fpdf2 tables: https://py-pdf.github.io/fpdf2/Tables.html (headings repeat on each page).
"""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path
from typing import Any

from fpdf import FPDF, FPDFException, XPos, YPos
from fpdf.fonts import FontFace

from herald.domain.errors import RenderError
from herald.domain.reports import PdfSource, render_summary
from herald.domain.tables import LOADERS, Table
from herald.ports.clock import Clock, SystemClock
from herald.ports.sources import Rendered, RenderRequest

_ENCODING = "windows-1252"
# Letters and signs that Unicode decomposition does not reduce to a Windows-1252 character.
_REPLACEMENTS = {
    "\u2212": "-",
    "\u2010": "-",
    "\u2011": "-",
    "\u2192": "->",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u0141": "L",
    "\u0142": "l",
    "\u0110": "D",
    "\u0111": "d",
    "\u0131": "i",
}
_NUMBER = re.compile(r"^[-+(]?[$€£]?\s?[\d,]*\.?\d+\)?\s?[%kKmMbB]?$")


def pdf_text(value: object) -> str:
    """``value`` as text the core fonts can draw (see the module docstring)."""
    out = []
    for char in str(value):
        if char in "\t\r\n":
            char = " "
        char = _REPLACEMENTS.get(char, char)
        try:
            char.encode(_ENCODING)
            out.append(char if char.isprintable() or char == " " else "?")
            continue
        except UnicodeEncodeError:
            pass
        base = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
        try:
            base.encode(_ENCODING)
            out.append(base or "?")
        except UnicodeEncodeError:
            out.append("?")
    return "".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


class PdfRenderer:
    """Render a ``pdf`` source. ``base_dir`` anchors relative ``data_file`` paths."""

    def __init__(self, base_dir: Path, clock: Clock | None = None, max_rows: int = 5000) -> None:
        self._base_dir = Path(base_dir)
        self._clock = clock or SystemClock()
        self._max_rows = max_rows

    def render(self, request: RenderRequest) -> Rendered:
        source = request.definition.source
        if not isinstance(source, PdfSource):
            raise RenderError(f"PdfRenderer cannot render a {source.type!r} source")
        columns, rows = self._table(source, request.period)
        summary = _summary(request, len(rows))
        try:
            data = self._build(request, source, columns, rows, summary)
        except FPDFException as exc:
            raise RenderError(f"PDF generation failed: {exc}") from exc
        filename = f"{request.definition.id}-{request.period}.pdf"
        return Rendered(data=data, content_type="application/pdf", filename=filename, summary=summary, rows=len(rows))

    def _table(self, source: PdfSource, period: str) -> Table:
        if source.data is not None:
            columns, raw_rows = list(source.data.columns), list(source.data.rows)
        elif source.data_file is not None:
            path = self._base_dir / source.data_file.replace("{period}", period)
            if not path.is_file():
                raise RenderError(f"data file not found: {path}")
            loaders = LOADERS
            loader = loaders.get(path.suffix.lower())
            if loader is None:
                raise RenderError(f"data file {path.name}: use a .csv or .json file")
            try:
                columns, raw_rows = loader(path)
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise RenderError(f"data file {path.name}: cannot read ({exc})") from exc
        else:
            return [], []
        rows = []
        for number, row in enumerate(raw_rows, start=1):
            if not isinstance(row, list) or len(row) > len(columns):
                raise RenderError(f"data row {number} has more cells than the {len(columns)} columns")
            rows.append([_cell(v) for v in row] + [""] * (len(columns) - len(row)))
        return [str(c) for c in columns], rows

    def _build(
        self, request: RenderRequest, source: PdfSource, columns: list[str], rows: list[list[str]], summary: str
    ) -> bytes:
        now = self._clock.now()
        title = source.title or request.definition.name
        pdf = _Document(orientation="L" if len(columns) > 6 else "P", footer_text=pdf_text(title))
        pdf.core_fonts_encoding = _ENCODING
        pdf.set_creation_date(now)
        pdf.set_title(pdf_text(title))
        pdf.set_creator("Herald")
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 18)
        pdf.multi_cell(0, 9, pdf_text(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 11)
        pdf.cell(0, 7, pdf_text(f"Period: {request.period}"), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.multi_cell(0, 7, pdf_text(summary), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 8)
        pdf.set_text_color(110)
        generated = now.strftime("%Y-%m-%d %H:%M UTC")
        pdf.cell(0, 6, f"Generated {generated} by Herald", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_text_color(0)
        pdf.ln(4)
        if not columns:
            pdf.set_font("Helvetica", "I", 10)
            pdf.cell(0, 7, "No data table for this report.")
            return bytes(pdf.output())
        shown = rows[: self._max_rows]
        align = tuple("RIGHT" if _numeric(rows, i) else "LEFT" for i in range(len(columns)))
        pdf.set_font("Helvetica", "", 9)
        with pdf.table(
            text_align=align,
            headings_style=FontFace(emphasis="BOLD", fill_color=(225, 230, 238)),
            repeat_headings=1,
            line_height=5.5,
        ) as table:
            for values in [columns, *shown]:
                table_row = table.row()
                for value in values:
                    table_row.cell(pdf_text(value))
        if len(rows) > len(shown):
            pdf.set_font("Helvetica", "I", 9)
            pdf.ln(2)
            pdf.cell(0, 6, f"Showing the first {len(shown):,} of {len(rows):,} rows.")
        return bytes(pdf.output())


class _Document(FPDF):
    def __init__(self, orientation: str, footer_text: str) -> None:
        super().__init__(orientation=orientation, unit="mm", format="A4")
        self._footer_text = footer_text
        self.set_auto_page_break(auto=True, margin=15)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 8)
        self.set_text_color(110)
        self.cell(0, 6, f"{self._footer_text} - page {self.page_no()}/{{nb}}", align="C")
        self.set_text_color(0)


def _numeric(rows: list[list[str]], index: int) -> bool:
    values = [row[index].strip() for row in rows if row[index].strip()]
    return bool(values) and all(_NUMBER.match(v) for v in values)


def _summary(request: RenderRequest, rows: int) -> str:
    """The summary with the real row count, keeping anything the service appended.

    The service formats the summary before rendering (rows unknown, so 0) and may add a
    note such as "data as of"; re-format the template with the count and keep the note.
    """
    definition = request.definition

    def summary(count: int) -> str:
        return render_summary(
            definition.summary, name=definition.name, period=request.period, rows=count, params=request.params
        )

    real = summary(rows)
    if not request.summary:
        return real
    provisional = summary(0)
    if request.summary.startswith(provisional):
        return real + request.summary[len(provisional) :]
    return request.summary
