"""SendGrid adapter throughput against a local SendGrid-compatible sink.

The sink (tests/support/sendgrid_sink.py) runs in its own process so that it does not
share the GIL with the clients being measured. Herald's embedded workers are threads,
so the mailer is driven by a ``ThreadPoolExecutor``; one ``SendGridMailer`` is shared
by all threads, as in production.

1. Instant sink: 10,000 recipients through ``SendGridMailer`` at concurrency C, against
   the raw rate of the same sink driven by a minimal client (a ``requests.Session`` per
   thread posting the same body) at the same C, alternated, median of ``ROUNDS``.
   Target: mailer / raw >= 0.5. The mailer sends with urllib3 directly, so it can beat
   that reference; a bare urllib3 client is measured too, to show the mailer's own cost.
2. Sink answering in 50 ms (as SendGrid does): rate against C / latency (target >= 0.8),
   and the naive loop a user would write (one thread, ``SendGridAPIClient.send`` per
   recipient) as the baseline, on a bounded sample.

Only 127.0.0.1; every loop is bounded. ``python -m bench.sendgrid_adapter`` runs it
alone. (Not ``bench/sendgrid.py``: that name shadows the ``sendgrid`` library for ruff's
import sorting and for scripts run from bench/.)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import urllib3
from sendgrid import SendGridAPIClient

from herald.adapters.sendgrid_mailer import SendGridConfig, SendGridMailer
from herald.ports.messages import EmailMessage
from tests.support.sendgrid_library import build_mail

REPO = Path(__file__).resolve().parents[1]
RECIPIENTS = int(os.environ.get("BENCH_SENDGRID_RECIPIENTS", "10000"))
CONCURRENCY = int(os.environ.get("BENCH_SENDGRID_CONCURRENCY", "16"))
ROUNDS = int(os.environ.get("BENCH_SENDGRID_ROUNDS", "3"))
LATENCY_MS = 50.0
NAIVE_SAMPLE = 200  # the naive loop at ~50 ms a request would take minutes for 10,000
API_KEY = "SG.bench"


def message(i: int) -> EmailMessage:
    return EmailMessage(
        to=f"recipient{i}@example.com",
        subject="Board pack — March 2026",
        text="Your report is ready: https://herald.example.com/l/abcdef",
        html="<p>Your report is ready: <a href='https://herald.example.com/l/abcdef'>download</a></p>",
        custom_args={"delivery_id": f"dlv-{i}", "run_id": "run-1", "report_id": "board-pack"},
        categories=("board-pack",),
        headers={"List-Unsubscribe": "<https://herald.example.com/u/tok>"},
        idempotency_key=f"dlv-{i}",
    )


def config(url: str) -> SendGridConfig:
    return SendGridConfig(api_key=API_KEY, from_email="reports@herald.example.com", from_name="Herald", host=url)


@contextmanager
def sink_process(latency_ms: float = 0.0) -> Iterator[str]:
    """Start the sink in its own process; yield its URL; stop it by closing its stdin."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sendgrid_sink", "--latency-ms", str(latency_ms)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        port = _read_port(process, timeout=20.0)
        yield f"http://127.0.0.1:{port}"
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _read_port(process: subprocess.Popen[str], timeout: float) -> int:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout)
    if not line or not line[0].startswith("PORT "):
        process.kill()
        raise RuntimeError(f"the sink did not start within {timeout:.0f} s: {line!r}")
    return int(line[0].split()[1])


def sink_accepted(url: str) -> int:
    return int(requests.get(f"{url}/__sink/stats", timeout=5).json()["accepted"])


def timed(label: str, url: str, expected: int, work: Callable[[], None]) -> float:
    """Run ``work``; check the sink accepted exactly ``expected`` more; return requests/s."""
    before = sink_accepted(url)
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    accepted = sink_accepted(url) - before
    if accepted != expected:
        raise RuntimeError(f"{label}: the sink accepted {accepted}, expected {expected}")
    return expected / elapsed


def through_mailer(url: str, count: int, concurrency: int) -> Callable[[], None]:
    def work() -> None:
        mailer = SendGridMailer(config(url))
        try:
            with ThreadPoolExecutor(max_workers=concurrency) as pool:
                for _ in pool.map(mailer.send, (message(i) for i in range(count))):
                    pass
        finally:
            mailer.close()

    return work


def raw_client(url: str, count: int, concurrency: int) -> Callable[[], None]:
    """The reference: a Session per thread posting one pre-built body, nothing else."""
    body = json.dumps(build_mail(config(url), message(0)).get()).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]

    def worker(share: int) -> None:
        with requests.Session() as session:
            for _ in range(share):
                response = session.post(f"{url}/v3/mail/send", data=body, headers=headers, timeout=10)
                if response.status_code != 202:
                    raise RuntimeError(f"raw client got {response.status_code}")

    def work() -> None:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(worker, shares))

    return work


def bare_urllib3(url: str, count: int, concurrency: int) -> Callable[[], None]:
    """A second reference: the mailer's own engine with nothing on top (one shared pool)."""
    body = json.dumps(build_mail(config(url), message(0)).get()).encode()
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    pool = urllib3.PoolManager(maxsize=concurrency)

    def worker(share: int) -> None:
        for _ in range(share):
            response = pool.request("POST", f"{url}/v3/mail/send", body=body, headers=headers, timeout=10)
            if response.status != 202:
                raise RuntimeError(f"bare urllib3 client got {response.status}")

    def work() -> None:
        with ThreadPoolExecutor(max_workers=concurrency) as executor:
            list(executor.map(worker, shares))
        pool.clear()

    return work


def naive_loop(url: str, count: int) -> Callable[[], None]:
    """What a user would write first: the library's own client, one recipient at a time."""

    def work() -> None:
        client = SendGridAPIClient(api_key=API_KEY, host=url)
        for i in range(count):
            client.send(build_mail(config(url), message(i)))

    return work


def run() -> dict[str, Any]:
    results: dict[str, Any] = {"recipients": RECIPIENTS, "concurrency": CONCURRENCY, "workers": "ThreadPoolExecutor"}
    with sink_process() as url:
        timed("warm-up", url, 200, through_mailer(url, 200, CONCURRENCY))
        raw_rates, mailer_rates, bare_rates = [], [], []
        for _ in range(ROUNDS):
            raw_rates.append(timed("raw", url, RECIPIENTS, raw_client(url, RECIPIENTS, CONCURRENCY)))
            bare_rates.append(timed("bare", url, RECIPIENTS, bare_urllib3(url, RECIPIENTS, CONCURRENCY)))
            mailer_rates.append(timed("mailer", url, RECIPIENTS, through_mailer(url, RECIPIENTS, CONCURRENCY)))
    raw, mailer, bare = statistics.median(raw_rates), statistics.median(mailer_rates), statistics.median(bare_rates)
    results["instant"] = {
        "raw_per_s": round(raw),
        "mailer_per_s": round(mailer),
        "ratio": round(mailer / raw, 3),
        "bare_urllib3_per_s": round(bare),
        "ratio_to_bare_urllib3": round(mailer / bare, 3),
        "rounds": {
            "raw": [round(r) for r in raw_rates],
            "bare_urllib3": [round(r) for r in bare_rates],
            "mailer": [round(r) for r in mailer_rates],
        },
        "target": 0.5,
    }
    with sink_process(LATENCY_MS) as url:
        slow: dict[str, Any] = {"latency_ms": LATENCY_MS}
        for concurrency in (CONCURRENCY, CONCURRENCY * 2):
            ideal = concurrency / (LATENCY_MS / 1000)
            figures: dict[str, Any] = {"ideal_per_s": ideal}
            if concurrency == CONCURRENCY:  # the same sink's floor, to read a noisy machine by
                raw = timed("raw 50ms", url, RECIPIENTS, raw_client(url, RECIPIENTS, concurrency))
                figures |= {"raw_per_s": round(raw, 1), "raw_ratio": round(raw / ideal, 3)}
            rate = timed("mailer 50ms", url, RECIPIENTS, through_mailer(url, RECIPIENTS, concurrency))
            figures |= {"mailer_per_s": round(rate, 1), "ratio": round(rate / ideal, 3)}
            slow[f"c{concurrency}"] = figures
        one = timed("1 thread", url, NAIVE_SAMPLE, through_mailer(url, NAIVE_SAMPLE, 1))
        naive = timed("naive", url, NAIVE_SAMPLE, naive_loop(url, NAIVE_SAMPLE))
        slow |= {"mailer_1_thread_per_s": round(one, 1), "naive_loop_per_s": round(naive, 1)}
        slow["naive_sample"] = NAIVE_SAMPLE
        slow["speedup_vs_naive"] = round(slow[f"c{CONCURRENCY}"]["mailer_per_s"] / naive, 1)
        slow["target"] = 0.8
    results["latency_50ms"] = slow
    results["load_average_1m"] = round(os.getloadavg()[0], 2)
    print_table(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    instant, slow = results["instant"], results["latency_50ms"]
    c = results["concurrency"]
    rows = [
        (f"instant sink, raw requests.Session x{c}", f"{instant['raw_per_s']:>8,}/s", ""),
        (f"instant sink, bare urllib3 pool x{c}", f"{instant['bare_urllib3_per_s']:>8,}/s", "the mailer's engine"),
        (f"instant sink, SendGridMailer x{c}", f"{instant['mailer_per_s']:>8,}/s",
         f"ratio {instant['ratio']:.2f} to requests (target >= 0.5), "
         f"{instant['ratio_to_bare_urllib3']:.2f} to bare urllib3"),
    ]  # fmt: skip
    for key, figures in slow.items():
        if key.startswith("c") and isinstance(figures, dict):
            if "raw_per_s" in figures:
                rows.append(
                    (f"50 ms sink, raw requests.Session x{key[1:]}", f"{figures['raw_per_s']:>8,.0f}/s",
                     f"{figures['raw_ratio']:.2f} of C/latency (a bare client: what this machine allows now)")
                )  # fmt: skip
            rows.append(
                (f"50 ms sink, SendGridMailer x{key[1:]}", f"{figures['mailer_per_s']:>8,.0f}/s",
                 f"{figures['ratio']:.2f} of C/latency = {figures['ideal_per_s']:.0f}/s (target >= 0.8)")
            )  # fmt: skip
    rows += [
        ("50 ms sink, SendGridMailer x1", f"{slow['mailer_1_thread_per_s']:>8,.1f}/s", f"{NAIVE_SAMPLE} recipients"),
        ("50 ms sink, naive SendGridAPIClient loop", f"{slow['naive_loop_per_s']:>8,.1f}/s",
         f"baseline; x{c} is {slow['speedup_vs_naive']}x faster"),
    ]  # fmt: skip
    print(f"\nSendGrid adapter: {results['recipients']:,} recipients, medians of {ROUNDS} rounds (instant sink)")
    for label, rate, note in rows:
        print(f"  {label:<44} {rate:>12}  {note}")
    rounds = instant["rounds"]
    print(f"  rounds (req/s): requests {rounds['raw']}, urllib3 {rounds['bare_urllib3']}, mailer {rounds['mailer']}")
    print(f"  load average (1 min) at the end: {results['load_average_1m']} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    run()
