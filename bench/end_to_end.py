"""What users feel (issue 14): Herald end to end beside the clients they would write.

One run, one nginx sink per latency (bench/nginx_sink.py), three senders side by side:

- the naive loop: the ``sendgrid`` library, one ``send`` per recipient, one thread;
- a minimal concurrent client: one urllib3 pool, 16 threads, one pre-built body;
- Herald end to end: a real ``herald serve`` subprocess on the embedded backend with 16
  worker threads and the SendGrid host pointed at the sink; the clock runs from the API
  trigger (``POST /api/reports/<id>/runs``) to the run's final status.

Every count is read at the sink (its access log), never from the sender. Then trigger →
first accepted send (p50, p95 over several triggers), and 1,000 / 10,000 / 100,000
recipients each in a fresh process (time per recipient, peak RSS = the process's VmHWM).
Only 127.0.0.1; every loop is bounded. ``python -m bench.end_to_end`` runs it alone;
``BENCH_QUICK=1`` shrinks every size (a smoke run, not figures).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import urllib3
from sendgrid import SendGridAPIClient

from bench.nginx_sink import Sink, nginx_sink
from bench.sendgrid_adapter import API_KEY, config, message
from tests.e2e.harness import HeraldProcess, child_processes
from tests.support.sendgrid_library import build_mail

QUICK = os.environ.get("BENCH_QUICK") == "1"
THREADS = 16
# Herald's worker processes (HERALD_WORKER_PROCESSES): one per core, as README "Performance"
# advises. Each side-by-side also runs one process, the default, for comparison.
PROCESSES = int(os.environ.get("BENCH_WORKER_PROCESSES") or max(2, os.cpu_count() or 1))
ROUNDS = 1 if QUICK else 2
# (naive, client, herald) recipients per latency: the naive loop at 50 ms is 20/s.
FULL_SIZES = {0.0: (2_000, 10_000, 5_000), 50.0: (100, 3_000, 2_000)}
SIZES = {0.0: (500, 2_000, 2_000), 50.0: (40, 400, 400)} if QUICK else FULL_SIZES
SCALE = (500, 2_000, 5_000) if QUICK else (1_000, 10_000, 100_000)
FIRST_SEND_TRIGGERS = 3 if QUICK else 10
FIRST_SEND_RECIPIENTS = 1_000
RUN_TIMEOUT = 900.0  # seconds: a 100,000-recipient run at the old ~400/s took ~250 s


def phase_start() -> float:
    """The instant a phase starts, as nginx logs it: its ``$msec`` is truncated to the
    millisecond, so a send in the phase's first millisecond can be logged before a
    microsecond-precise start. A 5 ms gap keeps the previous phase's last send in an
    earlier millisecond."""
    time.sleep(0.005)
    return math.floor(time.time() * 1000) / 1000


def sent_since(sink: Sink, since: float) -> list[float]:
    return [t for t in sink.times() if t >= since]


def _check(sink: Sink, since: float, expected: int, label: str) -> list[float]:
    # nginx logs a request just after answering it: the sender can finish first.
    deadline = time.monotonic() + 5.0
    got = sent_since(sink, since)
    while len(got) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
        got = sent_since(sink, since)
    if len(got) != expected:
        raise RuntimeError(f"{label}: the sink accepted {len(got)} sends, expected {expected}")
    return got


def naive_loop(sink: Sink, count: int) -> float:
    client = SendGridAPIClient(api_key=API_KEY, host=sink.url)
    since = phase_start()
    started = time.perf_counter()
    for i in range(count):
        client.send(build_mail(config(sink.url), message(i)))
    elapsed = time.perf_counter() - started
    _check(sink, since, count, "naive loop")
    return count / elapsed


def pool_client(sink: Sink, count: int, threads: int = THREADS) -> float:
    body = json.dumps(build_mail(config(sink.url), message(0)).get()).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    shares = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    pool = urllib3.PoolManager(maxsize=threads)

    def worker(share: int) -> None:
        for _ in range(share):
            response = pool.request("POST", f"{sink.url}/v3/mail/send", body=body, headers=headers, timeout=10)
            if response.status != 202:
                raise RuntimeError(f"client got {response.status}")

    since = phase_start()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as executor:
        list(executor.map(worker, shares))
    elapsed = time.perf_counter() - started
    pool.clear()
    _check(sink, since, count, "client")
    return count / elapsed


def _report(report_id: str, recipients: int) -> dict[str, Any]:
    return {
        "id": report_id,
        "name": f"Bench {report_id}",
        "owner": "owner@example.com",
        "source": {"type": "pdf", "title": "Bench", "data": {"columns": ["k", "v"], "rows": [["a", 1]]}},
        "recipients": {"email": [f"{report_id}-{i:06d}@example.com" for i in range(recipients)]},
    }


class Herald:
    """A `herald serve` subprocess pointed at the sink, with the given reports applied."""

    def __init__(
        self,
        sink: Sink,
        workdir: Path,
        reports: dict[str, int],
        env: dict[str, str] | None = None,
        processes: int = PROCESSES,
    ) -> None:
        environment = {
            "HERALD_SENDGRID_API_KEY": API_KEY,
            "HERALD_SENDGRID_HOST": sink.url,
            "HERALD_ALLOW_PRIVATE_TARGETS": "true",
            # Equal concurrency with the client: THREADS send threads in all, over the processes.
            "HERALD_WORKER_THREADS": str(max(1, THREADS // processes)),
            "HERALD_WORKER_PROCESSES": str(processes),
            "HERALD_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        definitions = [_report(rid, n) for rid, n in reports.items()]
        self.process = HeraldProcess(workdir, definitions, env=environment)
        try:
            self.process.start()
        except BaseException:
            if self.process.proc is not None and self.process.proc.poll() is None:
                self.process.kill()  # never leave a process that did not come up behind
            raise
        self.sink = sink
        self.triggers = 0

    def run(self, report_id: str, expected: int) -> dict[str, float]:
        """Trigger through the API, wait for the final status; figures from the sink."""
        self.triggers += 1
        since = phase_start()
        started = time.perf_counter()
        run_id = self.process.start_run(report_id, key=f"bench-{self.triggers}")
        deadline = started + RUN_TIMEOUT
        status = ""
        while time.perf_counter() < deadline:
            status = str(self.process.run(run_id).get("status"))
            if status in ("succeeded", "partial", "failed"):
                break
            time.sleep(0.05)  # the poll itself costs Herald a request: keep it light
        elapsed = time.perf_counter() - started
        if status != "succeeded":
            raise RuntimeError(f"herald run {run_id} ended {status!r}: {self.process.log_tail()}")
        sends = _check(self.sink, since, expected, f"herald {report_id}")
        return {"seconds": elapsed, "per_s": expected / elapsed, "first_send_s": min(sends) - since}

    def peak_rss_mib(self) -> list[float]:
        """Each process's peak RSS (VmHWM): the server's first, then its worker processes'."""
        assert self.process.proc is not None
        server = self.process.proc.pid
        children = child_processes(server)  # a restarted worker is its watcher thread's child
        peaks = []
        for pid in [server, *children]:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
        return peaks

    def stop(self) -> None:
        self.process.stop()


def side_by_side(latency_ms: float, root: Path) -> dict[str, Any]:
    naive_n, client_n, herald_n = SIZES[latency_ms]
    with nginx_sink(root / f"sink-{latency_ms:.0f}", latency_ms) as sink:
        reports = {"warm": 200, "main": herald_n}
        herald = Herald(sink, root / f"herald-{latency_ms:.0f}", reports)
        single = Herald(sink, root / f"herald-{latency_ms:.0f}-1", reports, processes=1)
        try:
            for server in (herald, single):
                server.run("warm", 200)
            pool_client(sink, 200)
            naive, client, ours, one = [], [], [], []
            for _ in range(ROUNDS):  # alternated, so a noisy neighbour hits all alike
                naive.append(naive_loop(sink, naive_n))
                client.append(pool_client(sink, client_n))
                ours.append(herald.run("main", herald_n)["per_s"])
                one.append(single.run("main", herald_n)["per_s"])
        finally:
            herald.stop()
            single.stop()
    n, cl, h, h1 = (statistics.median(x) for x in (naive, client, ours, one))
    return {
        "latency_ms": latency_ms,
        "worker_processes": PROCESSES,
        "recipients": {"naive": naive_n, "client": client_n, "herald": herald_n},
        "naive_per_s": round(n, 1),
        "client_per_s": round(cl, 1),
        "herald_per_s": round(h, 1),
        "herald_to_client": round(h / cl, 3),
        "herald_to_naive": round(h / n, 3),
        "herald_1_process_per_s": round(h1, 1),
        "herald_1_process_to_client": round(h1 / cl, 3),
        "rounds": {"naive": [round(r, 1) for r in naive], "client": [round(r) for r in client],
                   "herald": [round(r) for r in ours], "herald_1_process": [round(r) for r in one]},
    }  # fmt: skip


def first_send(root: Path) -> dict[str, Any]:
    with nginx_sink(root / "sink-first") as sink:
        herald = Herald(sink, root / "herald-first", {"first": FIRST_SEND_RECIPIENTS})
        try:
            latencies = [herald.run("first", FIRST_SEND_RECIPIENTS)["first_send_s"] for _ in range(FIRST_SEND_TRIGGERS)]
        finally:
            herald.stop()
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "recipients": FIRST_SEND_RECIPIENTS,
        "triggers": len(latencies),
        "p50_s": round(statistics.median(ordered), 3),
        "p95_s": round(p95, 3),
        "all_s": [round(x, 3) for x in latencies],
    }


def _validate_seconds(n: int) -> float:
    """How long validating the definition's recipient list alone takes (it happens at apply
    and at the first read in each process): a duplicate check that is not linear shows here."""
    from herald.domain.reports import Recipients

    emails = [f"v{i:06d}@example.com" for i in range(n)]
    started = time.perf_counter()
    Recipients(email=emails)
    return round(time.perf_counter() - started, 2)


def scale(root: Path) -> list[dict[str, Any]]:
    out = []
    with nginx_sink(root / "sink-scale") as sink:
        for n in SCALE:
            validate = _validate_seconds(n)
            try:
                herald = Herald(sink, root / f"herald-{n}", {f"s{n}": n})
            except (AssertionError, RuntimeError) as exc:  # e.g. it cannot even start in time
                out.append({"recipients": n, "error": str(exc).splitlines()[0][:200], "validate_seconds": validate})
                print(f"  {n:>7,} recipients: {out[-1]}", flush=True)
                continue
            try:
                figures = herald.run(f"s{n}", n)
                rss = herald.peak_rss_mib()
            finally:
                herald.stop()
            out.append(
                {
                    "recipients": n,
                    "seconds": round(figures["seconds"], 2),
                    "per_s": round(figures["per_s"], 1),
                    "ms_per_recipient": round(1000 * figures["seconds"] / n, 3),
                    "peak_rss_mib": round(max(rss), 1),  # the largest process (the target's figure)
                    "peak_rss_mib_per_process": [round(r, 1) for r in rss],
                    "validate_seconds": validate,
                }
            )
            print(f"  {n:>7,} recipients: {out[-1]}", flush=True)
    return out


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"threads": THREADS, "cpus": os.cpu_count(), "quick": QUICK}
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        root = Path(tmp)
        results["instant"] = side_by_side(0.0, root)
        print(f"  instant sink: {results['instant']}", flush=True)
        results["latency_50ms"] = side_by_side(50.0, root)
        print(f"  50 ms sink: {results['latency_50ms']}", flush=True)
        results["first_send"] = first_send(root)
        print(f"  trigger → first send: {results['first_send']}", flush=True)
        results["scale"] = scale(root)
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    print_table(results)
    return results


def table(results: dict[str, Any]) -> str:
    """The README's table (markdown)."""
    i, s, f = results["instant"], results["latency_50ms"], results["first_send"]
    lines = [
        "| sink | naive loop (`sendgrid`, 1 thread) | minimal client (urllib3, 16 threads) "
        f"| Herald end to end ({i.get('worker_processes', 1)} processes, 16 workers in all) | Herald / client "
        "| Herald / naive | Herald, 1 process / client |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in (("answers at once", i), ("answers in 50 ms", s)):
        lines.append(
            f"| {label} | {r['naive_per_s']:,.1f} /s | {r['client_per_s']:,.0f} /s "
            f"| {r['herald_per_s']:,.0f} /s ({r['recipients']['herald']:,} recipients) "
            f"| {r['herald_to_client']:.2f}x | {r['herald_to_naive']:.2f}x "
            f"| {r.get('herald_1_process_to_client', float('nan')):.2f}x |"
        )
    lines += [
        "",
        f"Trigger → first accepted send ({f['recipients']:,} recipients, {f['triggers']} triggers): "
        f"p50 {f['p50_s']:.2f} s, p95 {f['p95_s']:.2f} s.",
        "",
        "| recipients | wall time | per second | ms per recipient | peak RSS (largest process; each) |",
        "|---|---|---|---|---|",
    ]
    for r in results["scale"]:
        if "error" in r:
            lines.append(
                f"| {r['recipients']:,} | not measured: {r['error'][:80]} | | "
                f"(validating the recipient list alone: ~{r['validate_seconds']:,.0f} s) | |"
            )
            continue
        lines.append(
            f"| {r['recipients']:,} | {r['seconds']:,.1f} s | {r['per_s']:,.0f} | "
            f"{r['ms_per_recipient']:.3f} | {r['peak_rss_mib']:.0f} MiB "
            f"({', '.join(f'{m:.0f}' for m in r.get('peak_rss_mib_per_process', [r['peak_rss_mib']]))}) |"
        )
    return "\n".join(lines)


def print_table(results: dict[str, Any]) -> None:
    print("\nEnd to end (same run, same nginx sink):")
    print(table(results))
    print(f"load average (1 min) at the end: {results['load_average_1m']} on {results['cpus']} CPUs")


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    print(json.dumps(run(), indent=2))
