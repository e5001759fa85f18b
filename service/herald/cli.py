"""The `herald` command: serve, apply, run, status (and watchdog, see jobs/)."""

from __future__ import annotations

import getpass
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
from pydantic import ValidationError

from herald.bootstrap import build_container
from herald.domain.errors import StorageUnavailable
from herald.domain.records import Run
from herald.domain.reports import DefinitionError, ReportDefinition
from herald.domain.schedules import next_fire_times
from herald.domain.states import RunStatus
from herald.ports.clock import Clock, SystemClock
from herald.ports.container import Container
from herald.settings import Settings

EXIT_INVALID = 2
EXIT_NOT_SUCCEEDED = 1  # `run --wait`: the run ended partial / failed / missed / skipped, or the wait timed out
FINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.MISSED, RunStatus.SKIPPED})
STOP_SECONDS = 30.0  # `serve`: how long a tick or watchdog pass in progress may take to end
WAIT_STEP_SECONDS = 60.0  # `run --wait` looks again at least this often (a progress line each time)


def _settings(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        for item in exc.errors():
            click.echo(f"setting HERALD_{str(item['loc'][0]).upper()}: {item['msg']}", err=True)
        sys.exit(EXIT_INVALID)


def load_definitions(path: Path, root: Path | None = None) -> list[ReportDefinition]:
    """Parse and validate a file or folder, references resolved; exit 2 with every problem listed."""
    from herald.services import definitions

    try:
        return definitions.load(path, root)
    except DefinitionError as exc:
        click.echo(f"{path}: {len(exc.problems)} problem(s), nothing applied:", err=True)
        for line in exc.problems:
            click.echo(f"  {line}", err=True)
        sys.exit(EXIT_INVALID)


def _fire_times(report: ReportDefinition, first: datetime | None) -> list[str]:
    """The next three fire times, in the report's zone and in UTC."""
    if report.schedule is None or first is None:
        return ["no schedule (manual or event-triggered)" if report.enabled else "disabled: never fires"]
    zone = ZoneInfo(report.schedule.timezone)
    lines = []
    for instant in [first, *next_fire_times(report.schedule, first, 2)]:
        local = instant.astimezone(zone)
        lines.append(f"{local:%Y-%m-%d %H:%M %Z} ({report.schedule.timezone})  =  {instant:%Y-%m-%d %H:%M} UTC")
    return lines


def _clock(ctx: click.Context) -> Clock:
    clock: Clock = ctx.obj.get("clock") or SystemClock()
    return clock


def _container(ctx: click.Context, settings: Settings, base_dir: Path | None = None) -> Container:
    """The composition root, or the one a test put in ``obj["build"]`` (time is a port)."""
    build: Callable[[Settings], Container] | None = ctx.obj.get("build")
    if build is not None:
        return build(settings)
    return _built(lambda: build_container(settings, clock=ctx.obj.get("clock"), base_dir=base_dir))


def _built(build: Callable[[], Container]) -> Container:
    """A data folder that cannot be used (corrupt, read-only, full) is a message and exit 2."""
    try:
        return build()
    except StorageUnavailable as exc:
        click.echo(f"herald: cannot use the data store: {exc.message}", err=True)
        sys.exit(EXIT_INVALID)


def _upsert(container: Container, reports: list[ReportDefinition]) -> None:
    """`serve --reports`: save what the file says (no pruning: other files' reports stay)."""
    from herald.services.definitions import upsert

    upsert(container.store, reports, container.clock.now())


@click.group()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Data folder (default ./var).")
@click.pass_context
def main(ctx: click.Context, data_dir: Path | None) -> None:
    """Herald: report scheduling and delivery."""
    # Tests may pass obj={"clock": ..., "sleep": ..., "build": ...}: the CLI's time and
    # composition root are ports like any other.
    ctx.ensure_object(dict)
    ctx.obj["data_dir"] = data_dir


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--check", is_flag=True, help="Validate and print the plan; change nothing.")
@click.option("--offline", is_flag=True, help="With --check: validate only, do not read the store (CI).")
@click.option(
    "--actor",
    envvar="HERALD_APPLY_ACTOR",
    default=None,
    help="Who applies, for the change history (default user@host; env HERALD_APPLY_ACTOR).",
)
@click.pass_context
def apply(ctx: click.Context, path: Path, check: bool, offline: bool, actor: str | None) -> None:
    """Make the store match the definitions in PATH (a YAML file or a folder of them).

    Everything is validated first (all or nothing). The plan is printed: reports added,
    changed, disabled (in the store but no longer in PATH: disabled, never deleted) and
    unchanged, each with its next three fire times. Only the store is needed: on gcp,
    HERALD_GCP_PROJECT (and the Firestore emulator host, if any)."""
    from herald.services import definitions
    from herald.store_factory import StoreConfigError, build_store, store_exists

    settings = _settings(data_dir=ctx.obj["data_dir"])
    reports = load_definitions(path, settings.source_root)
    if check and offline:
        click.echo(f"{path}: {len(reports)} report(s) valid (offline: not compared with the store)")
        return
    now = _clock(ctx).now()
    try:
        store = build_store(settings) if not check or store_exists(settings) else None
        current = store.list_reports() if store is not None else []
    except StoreConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    except Exception as exc:  # the store's own client errors (network, permissions): one line
        raise click.ClickException(f"cannot read the store ({settings.backend}): {exc}") from None
    planned = definitions.plan(current, reports, now)
    for change in planned.changes:
        click.echo(definitions.describe(change))
        if change.action != "disable":
            for line in _fire_times(change.definition, change.next_fire_at):
                click.echo(f"    {line}")
    click.echo(f"plan: {planned.summary()}")
    if check:
        click.echo(f"{path}: {len(reports)} report(s) valid; nothing applied (--check)")
        return
    assert store is not None
    who = actor or f"{getpass.getuser()}@{socket.gethostname()}"
    try:
        definitions.apply(store, planned, now, who, origin=str(path))
    except Exception as exc:
        raise click.ClickException(f"applying to the store ({settings.backend}) failed: {exc}") from None
    click.echo(f"applied by {who}: {planned.summary()}")


@main.command()
@click.argument("report_id")
@click.pass_context
def history(ctx: click.Context, report_id: str) -> None:
    """The recorded definition changes of REPORT_ID (JSON lines, oldest first)."""
    from herald.services import definitions
    from herald.store_factory import StoreConfigError, build_store

    try:
        store = build_store(_settings(data_dir=ctx.obj["data_dir"]))
    except StoreConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    for entry in definitions.history(store, report_id):
        click.echo(json.dumps(entry, default=str, sort_keys=True))


@main.command()
@click.argument("report_id")
@click.option("--param", "params", multiple=True, help="k=v run parameter (repeatable).")
@click.option(
    "--wait/--no-wait",
    default=False,
    help="Wait until the run is final, retries included (embedded: its tasks run here); exit 1 unless succeeded.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=3600.0,
    show_default=True,
    help="--wait: give up after this many seconds (exit 1).",
)
@click.option(
    "--to",
    "test_to",
    default=None,
    metavar="ADDRESS",
    help="Send a test: render as usual, e-mail only ADDRESS ('owner' = the report's owner), marked as a test.",
)
@click.pass_context
def run(
    ctx: click.Context, report_id: str, params: tuple[str, ...], wait: bool, timeout: float, test_to: str | None
) -> None:
    """Start a manual run of REPORT_ID (or, with --to, a test sent to one address)."""
    from herald.services.runs import UnknownReport, start_manual_run

    parsed: dict[str, str] = {}
    for item in params:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not k=v", param_hint="--param")
        parsed[key] = value
    container = _container(ctx, _settings(data_dir=ctx.obj["data_dir"]))
    try:
        to = None if test_to is None else ("" if test_to == "owner" else test_to)
        if to and not _looks_like_address(to):
            raise click.BadParameter(f"{to!r} is not an e-mail address", param_hint="--to")
        started, _ = start_manual_run(container, report_id, parsed, test_to=to)
    except UnknownReport:
        click.echo(f"unknown report {report_id!r} (see `herald status`)", err=True)
        sys.exit(EXIT_INVALID)
    kind = f"test run to {started.test_to}" if started.test_to else "run"
    click.echo(f"{kind} {started.id} queued for {report_id} ({started.period})")
    if not wait:
        return
    sleep: Callable[[float], None] = ctx.obj.get("sleep") or time.sleep
    final = wait_for_run(container, started.id, timedelta(seconds=timeout), sleep, click.echo)
    status = final.status if final else "unknown"
    if final is None or final.status not in FINAL:
        click.echo(f"run {started.id}: still {status} after {timeout:g}s; gave up waiting", err=True)
        sys.exit(EXIT_NOT_SUCCEEDED)
    counts = container.store.delivery_counts(started.id)
    detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    click.echo(f"run {started.id}: {status}" + (f" ({detail})" if detail and status != RunStatus.SUCCEEDED else ""))
    if final.status != RunStatus.SUCCEEDED:
        sys.exit(EXIT_NOT_SUCCEEDED)


def _looks_like_address(text: str) -> bool:
    from pydantic import TypeAdapter, ValidationError
    from pydantic.networks import EmailStr

    try:
        TypeAdapter(EmailStr).validate_python(text)
    except ValidationError:
        return False
    return True


def wait_for_run(
    container: Container,
    run_id: str,
    timeout: timedelta,
    sleep: Callable[[float], None],
    echo: Callable[[str], None],
) -> Run | None:
    """Until the run is final or ``timeout`` passes, by ``container.clock``.

    Embedded: due tasks are dispatched here (a running `serve` may take some too: tasks
    are leased) and the wait is until the next task's ETA, so a retry 2, 8 or 32 minutes
    out is waited for. gcp: Cloud Tasks does the work; the run is looked at every minute.
    Each wait prints one progress line. ``sleep`` is ``time.sleep`` (tests move a fake clock)."""
    from herald.adapters.embedded.sqlite_queue import SQLiteQueue
    from herald.web.app import create_app
    from herald.web.dispatch import in_process_dispatcher

    clock, store = container.clock, container.store
    queue = container.queue if isinstance(container.queue, SQLiteQueue) else None
    dispatch = in_process_dispatcher(create_app(container)) if queue is not None else None
    deadline = clock.now() + timeout
    while True:
        if queue is not None and dispatch is not None:
            queue.drain(dispatch)
        current = store.get_run(run_id)
        now = clock.now()
        if current is None or current.status in FINAL or now >= deadline:
            return current
        next_task = queue.seconds_until_next() if queue is not None else None
        delay = min(WAIT_STEP_SECONDS if next_task is None else max(next_task, 0.5), WAIT_STEP_SECONDS)
        delay = min(delay, (deadline - now).total_seconds())
        counts = store.delivery_counts(run_id)
        detail = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        upcoming = f"next task in {next_task:.0f}s" if next_task is not None else "no task due here"
        echo(f"  … {current.status}" + (f" ({detail})" if detail else "") + f"; {upcoming}")
        sleep(delay)


@main.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Reports, their next fire time and last run (reads the store only, like apply)."""
    from herald.store_factory import StoreConfigError, build_store

    settings = _settings(data_dir=ctx.obj["data_dir"])
    try:
        store = _container(ctx, settings).store if ctx.obj.get("build") else build_store(settings)
    except StoreConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_INVALID)
    for stored in store.list_reports():
        last = store.list_runs(report_id=stored.definition.id, limit=1).items
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

    from herald.adapters.embedded.sqlite_queue import SQLiteQueue
    from herald.logs import configure_logging
    from herald.web.app import create_app
    from herald.web.dispatch import in_process_dispatcher, worker_pools
    from herald.worker_processes import WorkerProcesses

    settings = _settings(data_dir=ctx.obj["data_dir"], host=host, port=port)
    if settings.backend != "embedded":
        raise click.ClickException("`herald serve` runs the embedded backend; on gcp use gunicorn (see Dockerfile)")
    definitions = load_definitions(reports_file, settings.source_root) if reports_file else []
    configure_logging(settings.log_level)
    base_dir = reports_file.parent.resolve() if reports_file else None
    container = _built(lambda: build_container(settings, base_dir=base_dir))
    _upsert(container, definitions)
    if not settings.watchdog_heartbeat_url and any(s.definition.schedule for s in container.store.list_reports()):
        click.echo(
            "herald: warning: HERALD_WATCHDOG_HEARTBEAT_URL is not set. The watchdog runs inside this process: "
            "if it dies, nothing alerts. Point the variable at an external monitor (a dead-man's switch).",
            err=True,
        )
    app = create_app(container)
    dispatch = in_process_dispatcher(app)
    assert isinstance(container.queue, SQLiteQueue)
    pools = worker_pools(container.queue, dispatch, settings)  # renders apart from sends (issue 12, 14)
    released = getattr(container.store, "release_run_leases", lambda: 0)()  # the previous process is gone
    if released:
        click.echo(f"herald: resumed {released} run step(s) the previous process had claimed", err=True)
    from herald.web.security import OPEN_LOOPBACK, QuietRequestHandler

    server = make_server(settings.host, settings.port, app, threaded=True, request_handler=QuietRequestHandler)
    app.config[OPEN_LOOPBACK] = str(server.server_address[0])  # issue 11: open only if this is loopback
    stop = threading.Event()
    ticker = threading.Thread(target=_tick_loop, args=(dispatch, settings.tick_seconds, stop, settings), daemon=True)
    watchdog = threading.Thread(
        target=_watchdog_loop, args=(dispatch, settings.watchdog_interval_seconds, stop), daemon=True
    )

    signalled: list[int] = []

    def shutdown(signum: int, _frame: Any) -> None:
        # Once: a second signal can arrive while this handler runs, and stop.set() holds a
        # lock the nested call would wait on for ever (the marker is set before it).
        if signalled:
            return
        signalled.append(signum)
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()
        click.echo(f"\nherald: {signal.Signals(signum).name} received, finishing in-flight work…", err=True)

    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGTERM, shutdown)
    for pool in pools:
        pool.start()  # takes back the previous process's leases: before any worker process leases
    workers = WorkerProcesses(settings.worker_processes - 1 if pools else 0, settings.data_dir)
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
    # The tick and the watchdog first: a pass they are in the middle of may still enqueue.
    ticker.join(STOP_SECONDS)
    watchdog.join(STOP_SECONDS)
    workers.stop()
    for pool in pools:
        pool.stop()
    click.echo("herald: stopped; queued work resumes on the next start", err=True)


@main.command("worker", hidden=True)
@click.option("--parent", type=int, required=True, help="The `herald serve` process this one works for.")
@click.pass_context
def worker(ctx: click.Context, parent: int) -> None:
    """One of `herald serve`'s worker processes (HERALD_WORKER_PROCESSES); started by it, not by hand."""
    from herald.logs import configure_logging
    from herald.worker_processes import run_worker

    settings = _settings(data_dir=ctx.obj["data_dir"])
    configure_logging(settings.log_level)
    try:
        run_worker(settings, parent)
    except StorageUnavailable as exc:
        click.echo(f"herald worker: cannot use the data store: {exc.message}", err=True)
        sys.exit(EXIT_INVALID)


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
    result = run_watchdog(_built(lambda: build_container(settings)))
    click.echo(json.dumps({"open": len(result.found), "new": len(result.new), "posted": result.posted}))


if __name__ == "__main__":  # `python -m herald.cli`: how `herald serve` starts its worker processes
    main()
