"""File source: a report produced upstream and left on disk, e.g. ``exports/pnl-{period}.pdf``."""

from __future__ import annotations

from pathlib import Path

from herald.domain.errors import RenderError
from herald.domain.reports import FileSource
from herald.ports.sources import Rendered, RenderRequest


class FileRenderer:
    """Render a ``file`` source. Relative paths are taken from ``base_dir``.

    Confined (issue 11): the file, after resolving ``..`` and symlinks, must lie under
    ``root`` (settings.source_root; default ``base_dir``, the definitions' folder), so a
    definition cannot deliver /etc/passwd or the data dir's secret key.
    """

    def __init__(self, base_dir: Path, max_bytes: int = 200 * 1024 * 1024, root: Path | None = None) -> None:
        self._base_dir = Path(base_dir)
        self._max_bytes = max_bytes
        self._root = Path(root if root is not None else base_dir).resolve()

    def path_for(self, source: FileSource, period: str) -> Path:
        return self._base_dir / source.path.replace("{period}", period)

    def render(self, request: RenderRequest) -> Rendered:
        source = request.definition.source
        if not isinstance(source, FileSource):
            raise RenderError(f"FileRenderer cannot render a {source.type!r} source")
        path = self.path_for(source, request.period)
        try:
            if not path.resolve().is_relative_to(self._root):
                raise RenderError(f"report file {source.path!r} is outside the source root {self._root}")
            size = path.stat().st_size
            if not path.is_file():
                raise RenderError(f"report file {path} is not a regular file")
            if size > self._max_bytes:
                raise RenderError(f"report file {path} is larger than {self._max_bytes:,} bytes")
            data = path.read_bytes()
        except FileNotFoundError:
            raise RenderError(f"report file not found: {path}") from None
        except OSError as exc:
            raise RenderError(f"report file {path} cannot be read: {exc.strerror or exc}") from None
        if not data:
            # An upstream job that created the file but has not written it yet, or failed.
            raise RenderError(f"report file {path} is empty")
        return Rendered(data=data, content_type=source.content_type, filename=path.name)
