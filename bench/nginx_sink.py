"""A SendGrid-shaped sink that is never the bottleneck: Debian's nginx (issue 14).

``return 202`` with an ``X-Message-Id`` header answers at once; the echo module's
``echo_sleep`` answers after a fixed latency, as SendGrid does (~50 ms). nginx runs
unprivileged (``-c CONF -p DIR``) on 127.0.0.1, its access log records every request
with ``$msec`` (when it was answered), so counts and first-send times are read at the
sink itself, never from the clients being measured. ``mk/bench.mk`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
START_ATTEMPTS = 5  # another process may take the port between our probe and nginx's bind

CONF = """
{load}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
daemon off;
events {{ worker_connections 4096; }}
http {{
    log_format sink '$msec $request_uri $status';
    access_log {dir}/access.log sink;  # unbuffered: read while nginx runs
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            add_header X-Message-Id $request_id always;
            {answer}
        }}
    }}
}}
"""


@dataclass
class Sink:
    url: str
    access_log: Path

    def times(self) -> list[float]:
        """When each accepted mail-send was answered (epoch seconds), in log order."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "/v3/mail/send" and parts[2] == "202":
                out.append(float(parts[0]))
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def available() -> bool:
    return Path(NGINX).exists() and ECHO_MODULE.exists()


@contextmanager
def nginx_sink(workdir: Path, latency_ms: float = 0.0) -> Iterator[Sink]:
    """nginx on a free loopback port; stopped (``-s stop``) and its log flushed on exit."""
    if not available():
        raise RuntimeError("nginx-light and libnginx-mod-http-echo are needed: `make bench` installs them")
    workdir.mkdir(parents=True, exist_ok=True)
    if latency_ms:
        answer = f"echo_read_request_body; echo_sleep {latency_ms / 1000:.3f}; echo_status 202; echo '';"
    else:
        answer = "return 202;"
    for _ in range(START_ATTEMPTS):
        port = _free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(CONF.format(load=f"load_module {ECHO_MODULE};", dir=workdir, port=port, answer=answer))
        (workdir / "access.log").unlink(missing_ok=True)
        process = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(workdir)], stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process.poll() is None and not _answers(port):
            time.sleep(0.05)
        if process.poll() is None and _answers(port):
            break
        process.kill()
        process.wait(5)
    else:
        raise RuntimeError(f"nginx did not start: {(workdir / 'error.log').read_text(errors='replace')[-500:]}")
    try:
        yield Sink(f"http://127.0.0.1:{port}", workdir / "access.log")
    finally:
        subprocess.run([NGINX, "-c", str(conf), "-p", str(workdir), "-s", "stop"], check=False, capture_output=True)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
