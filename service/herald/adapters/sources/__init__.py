"""Report sources: one renderer per ``source.type``, behind the Source port."""

from __future__ import annotations

import logging
from pathlib import Path

import requests

from herald.adapters.sources.file import FileRenderer
from herald.adapters.sources.http import HttpRenderer
from herald.adapters.sources.pdf import PdfRenderer
from herald.domain.errors import RenderError
from herald.ports.clock import Clock
from herald.ports.sources import Rendered, RenderRequest, Source

__all__ = ["FileRenderer", "HttpRenderer", "PdfRenderer", "SourceRouter"]

log = logging.getLogger(__name__)


class SourceRouter:
    """The Source the services see: dispatches on ``definition.source.type``.

    ``base_dir`` anchors relative paths (``data_file``, ``path``), normally the folder of
    the definitions file; ``timeout_seconds`` is the HTTP connect timeout (each http
    definition sets its own read timeout). ``root`` confines file sources (settings.source_root,
    default ``base_dir``); ``allow_private`` lets http sources reach private and loopback
    addresses (settings.allow_private_targets; never metadata or link-local).
    """

    def __init__(
        self,
        base_dir: Path,
        timeout_seconds: float = 10.0,
        clock: Clock | None = None,
        session: requests.Session | None = None,
        root: Path | None = None,
        allow_private: bool = False,
        max_seconds: float = 300.0,
    ) -> None:
        self._renderers: dict[str, Source] = {
            "pdf": PdfRenderer(base_dir, clock=clock),
            "http": HttpRenderer(
                connect_timeout_seconds=timeout_seconds,
                session=session,
                allow_private=allow_private,
                max_seconds=max_seconds,
            ),
            "file": FileRenderer(base_dir, root=root),
        }

    def render(self, request: RenderRequest) -> Rendered:
        kind = request.definition.source.type
        renderer = self._renderers.get(kind)
        if renderer is None:
            raise RenderError(f"unknown source type {kind!r}")
        try:
            return renderer.render(request)
        except RenderError:
            raise
        except Exception as exc:
            # A bug in a renderer must still fail the run and alert the owner, not leave
            # it stuck in `rendering` behind a task that errors forever.
            log.exception("renderer crashed", extra={"run_id": request.run_id, "report_id": request.definition.id})
            raise RenderError(f"{kind} source failed unexpectedly: {type(exc).__name__}: {exc}") from exc
