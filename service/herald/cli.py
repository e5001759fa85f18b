"""The `herald` command: serve, apply, run, status (and watchdog, see jobs/)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import yaml
from pydantic import ValidationError

from herald.bootstrap import Container, build_container
from herald.domain.reports import DefinitionError, ReportDefinition, parse_definitions
from herald.domain.schedules import next_fire_times
from herald.settings import Settings

EXIT_INVALID = 2


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for item in exc.errors():
            click.echo(f"setting HERALD_{str(item['loc'][0]).upper()}: {item['msg']}", err=True)
        sys.exit(EXIT_INVALID)


def load_definitions(path: Path) -> list[ReportDefinition]:
    """Parse and validate a whole YAML file; exit 2 with every problem listed."""
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        click.echo(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}", err=True)
        sys.exit(EXIT_INVALID)
    try:
        return parse_definitions(document)
    except DefinitionError as exc:
        click.echo(f"{path}: {len(exc.problems)} problem(s), nothing applied:", err=True)
        for line in exc.problems:
            click.echo(f"  {line}", err=True)
        sys.exit(EXIT_INVALID)


def _apply(container: Container, definitions: list[ReportDefinition], echo: bool = True) -> None:
    from herald.services.scheduling import apply_definitions

    for stored in apply_definitions(container, definitions):
        if not echo:
            continue
        report = stored.definition
        click.echo(f"{report.id}: {report.name}" + ("" if report.enabled else " (disabled)"))
        if report.schedule is None or stored.next_fire_at is None:
            click.echo("  no schedule (manual or event-triggered)")
            continue
        zone = ZoneInfo(report.schedule.timezone)
        first = [stored.next_fire_at, *next_fire_times(report.schedule, stored.next_fire_at, 2)]
        for instant in first:
            local = instant.astimezone(zone)
            click.echo(f"  {local:%Y-%m-%d %H:%M %Z} ({report.schedule.timezone})  =  {instant:%Y-%m-%d %H:%M} UTC")


@click.group()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Data folder (default ./var).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Herald: report scheduling and delivery."""
    ctx.obj = {"data_dir": data_dir}


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Validate only; change nothing.")
@click.pass_context
def apply(ctx: click.Context, file: Path, check: bool) -> None:
    """Validate and upsert report definitions from a YAML FILE (all or nothing)."""
    definitions = load_definitions(file)
    if check:
        click.echo(f"{file}: {len(definitions)} report(s) valid")
        return
    container = build_container(_settings(data_dir=ctx.obj["data_dir"]), base_dir=file.parent.resolve())
    _apply(container, definitions)


@main.command()
@click.argument("report_id")
@click.option("--param", "params", multiple=True, help="k=v run parameter (repeatable).")
@click.option("--wait/--no-wait", default=False, help="Process the run here instead of leaving it to `serve`.")
@click.pass_context
def run(ctx: click.Context, report_id: str, params: tuple[str, ...], wait: bool) -> None:
    """Start a manual run of REPORT_ID."""
    from herald.services.runs import UnknownReport, start_manual_run

    parsed: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        parsed[key] = value
    container = build_container(_settings(data_dir=ctx.obj["data_dir"]))
    try:
        started, _ = start_manual_run(container, report_id, parsed)
    except UnknownReport:
        click.echo(f"unknown report {report_id!r} (see `herald status`)", err=True)
        sys.exit(EXIT_INVALID)
    click.echo(f"run {started.id} queued for {report_id} ({started.period})")
    if wait:
        from herald.web.app import create_app
        from herald.web.dispatch import in_process_dispatcher

        queue: Any = container.queue
        queue.drain(in_process_dispatcher(create_app(container)))
        final = container.store.get_run(started.id)
        click.echo(f"run {started.id}: {final.status if final else 'unknown'}")


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Reports, their next fire time and last run."""
    container = build_container(_settings(data_dir=ctx.obj["data_dir"]))
    for stored in container.store.list_reports():
        last = container.store.list_runs(report_id=stored.definition.id, limit=1).items
        click.echo(
            json.dumps(
                {
                    "report": stored.definition.id,
                    "next_fire_at": stored.next_fire_at.isoformat() if stored.next_fire_at else None,
                    "last_run": {"id": last[0].id, "status": str(last[0].status)} if last else None,
                }
            )
        )


@main.command()
@click.option("--reports", "reports_file", type=click.Path(path_type=Path), default=None, help="Apply this first.")
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.pass_context
def serve(ctx: click.Context, reports_file: Path | None, host: str | None, port: int | None) -> None:
    """Run Herald (embedded backend): HTTP, the task workers and the minute tick, in one process."""
    from werkzeug.serving import make_server

    from herald.adapters.embedded.sqlite_queue import QueueWorkers, SQLiteQueue
    from herald.logs import configure_logging
    from herald.web.app import create_app
    from herald.web.dispatch import in_process_dispatcher

    settings = _settings(data_dir=ctx.obj["data_dir"], host=host, port=port)
    if settings.backend != "embedded":
        raise click.ClickException("`herald serve` runs the embedded backend; on gcp use gunicorn (see Dockerfile)")
    definitions = load_definitions(reports_file) if reports_file else []
    configure_logging(settings.log_level)
    base_dir = reports_file.parent.resolve() if reports_file else None
    container = build_container(settings, base_dir=base_dir)
    _apply(container, definitions, echo=False)
    app = create_app(container)
    dispatch = in_process_dispatcher(app)
    assert isinstance(container.queue, SQLiteQueue)
    workers = QueueWorkers(container.queue, dispatch, settings.worker_threads)
    server = make_server(settings.host, settings.port, app, threaded=True)
    stop = threading.Event()
    ticker = threading.Thread(target=_tick_loop, args=(dispatch, settings.tick_seconds, stop, settings), daemon=True)
    watchdog = threading.Thread(
        target=_watchdog_loop, args=(dispatch, settings.watchdog_interval_seconds, stop), daemon=True
    )

    def shutdown(signum: int, _frame: Any) -> None:
        click.echo(f"\nherald: {signal.Signals(signum).name} received, finishing in-flight work…", err=True)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    workers.start()
    ticker.start()
    watchdog.start()
    click.echo(
        f"Herald is serving on {settings.public_url}  (backend: embedded, data: {settings.data_dir.resolve()})\n"
        f"  API:     {settings.public_url}/api/reports\n"
        f"  Outbox:  {settings.outbox_dir.resolve()}\n"
        f"  Reports: {len(definitions)} applied" + (f" from {reports_file}" if reports_file else "")
    )
    server.serve_forever()
    workers.stop()
    ticker.join(5)
    watchdog.join(5)
    click.echo("herald: stopped; queued work resumes on the next start", err=True)


def _tick_loop(dispatch: Any, every: float, stop: threading.Event, settings: Settings | None = None) -> None:
    from datetime import UTC, datetime

    from herald.ports.queue import Task
    from herald.services.watchdog import record_tick

    while not stop.is_set():
        result = dispatch(Task(name="tick", path="/scheduler/tick"))
        if settings is not None and 200 <= result.status < 300:
            record_tick(settings, datetime.now(UTC))  # the watchdog's evidence that the ticker lives
        # Wake on the boundary of the period (the top of each minute by default).
        stop.wait(every - (time.time() % every) + 0.05)


def _watchdog_loop(dispatch: Any, every: float, stop: threading.Event) -> None:
    """The watchdog every ``every`` seconds, through the same route Cloud Scheduler would call."""
    from herald.ports.queue import Task

    while not stop.wait(every):
        dispatch(Task(name="watchdog", path="/scheduler/watchdog"))


@main.command()
@click.pass_context
def watchdog(ctx: click.Context) -> None:
    """One watchdog pass: late or missed slots, stuck runs, a dead tick -> the ops channel."""
    from herald.logs import configure_logging
    from herald.services.watchdog import run_watchdog

    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level, settings.gcp_project)
    result = run_watchdog(build_container(settings))
    click.echo(json.dumps({"open": len(result.found), "new": len(result.new), "posted": result.posted}))
