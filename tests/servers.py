"""Real S3 server processes for tests, and a recording (fault-injecting) HTTP proxy.

Everything binds to 127.0.0.1 only; every process started here is stopped by PID.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class MotoServer:
    """``moto_server`` (moto[server]) in its own process on a free port."""

    def __init__(self, port: int | None = None, log_path: str | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path or os.devnull
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_http(self.url + "/moto-api/")
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class Recorded:
    method: str
    path: str  # path and query, as sent
    headers: dict[str, str]  # lower-cased names
    body_len: int
    body_md5: str
    status: int = 0

    @property
    def key_path(self) -> str:
        return self.path.split("?", 1)[0]


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away (timed out, reset by a fault) is expected here."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def first(method: str, where: Callable[[Any], bool], action: Any, hits: list[str]) -> Any:
    """A fault: the first request of `method` that `where` accepts meets `action` (its path
    noted in hits); every other request goes through."""

    def fault(r: Any) -> Any:
        if r.method == method and where(r) and not hits:
            hits.append(r.path)
            return action
        return None

    return fault


@dataclass
class RecordingProxy:
    """A reverse proxy that records every request and can alter traffic.

    ``fault`` is called with each request record before it is forwarded; it may return
    None (forward), an int or (int, code) (answer that HTTP status with an S3 error body,
    do not forward), "drop" (close the connection without answering), "flip" (forward
    the body with one bit flipped), "flip-response" (flip a bit of the answer's body),
    "drop-response" (forward, then close the connection instead of answering),
    "cut-response" (forward, then send only half the answer's body and close), an answer
    (200, "Code") for a 200 whose body is an error, ("stall", seconds) (a slow server:
    forward at once, hold the answer that long) or
    ("late", seconds) (late delivery: hold the request that long, then forward it even
    though the client has given up by then, a duplicate that lands after its retry).
    """

    upstream: str
    records: list[Recorded] = field(default_factory=list)
    fault: Callable[[Recorded], Any] | None = None
    keep_records: bool = True  # False: a long soak does not hold every request in memory

    def __post_init__(self) -> None:
        up = urlsplit(self.upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec = Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    len(body),
                    hashlib.md5(body).hexdigest(),
                )
                if proxy.keep_records:
                    with proxy._lock:
                        proxy.records.append(rec)
                action = proxy.fault(rec) if proxy.fault else None
                hold_answer = 0.0
                if isinstance(action, tuple) and action[0] in ("stall", "late"):
                    if action[0] == "late":
                        time.sleep(action[1])
                    else:
                        hold_answer = action[1]
                    action = None
                if action == "flip" and body:
                    body = bytes([body[0] ^ 0x01]) + body[1:]  # corruption in transit
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(action, (int, tuple)):
                    status, code = action if isinstance(action, tuple) else (action, "")
                    code = code or ("InternalError" if status >= 500 else "AccessDenied")
                    rec.status = status
                    err = (
                        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                        "<Message>injected by the test proxy</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("x-amz-request-id", f"injected-{id(rec):x}")
                    self.send_header("Content-Length", str(len(err)))
                    self.send_header("Content-Type", "application/xml")
                    self.end_headers()
                    self.wfile.write(err)
                    return
                conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=120)
                try:
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("connection", "keep-alive")
                    }
                    try:
                        conn.request(self.command, self.path, body=body, headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                    except OSError:  # the server is down (a test stopped it): no answer
                        self.close_connection = True
                        return
                    rec.status = resp.status
                    time.sleep(hold_answer)  # done upstream, the answer comes late
                    if action == "flip-response" and data:
                        data = data[:-1] + bytes([data[-1] ^ 0x01])
                    if action == "drop-response":  # done upstream, the answer is lost
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(resp.status)
                    for k, v in resp.getheaders():
                        if k.lower() in ("transfer-encoding", "connection", "content-length"):
                            continue
                        self.send_header(k, v)
                    if self.command == "HEAD":
                        self.send_header("Content-Length", resp.getheader("Content-Length", "0"))
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if action == "cut-response" and data:  # the connection breaks midway
                        self.wfile.write(data[: len(data) // 2])
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def requests(self, method: str | None = None, path_contains: str = "") -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self.records
                if (method is None or r.method == method) and path_contains in r.path
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RgwServer:
    """A one-node Ceph RADOS Gateway (scripts/rgw/start): a real, validating S3 server.
    Data lives in RAM; the state directory and every daemon go away at stop()."""

    def __init__(self, memstore_bytes: int | None = None, gateways: int = 1) -> None:
        self.port = next(
            p for p in range(7010, 7091, 10) if all(port_free(p + i) for i in range(10))
        )
        self.env: dict[str, str] = {}
        self.memstore_bytes = memstore_bytes  # RAM for object data (scripts/rgw/start: 1 GiB)
        self.gateways = gateways  # 2: a second radosgw over the same cluster (url_2)

    def start(self) -> RgwServer:
        env = dict(os.environ)
        if self.memstore_bytes:
            env["S3SRV_MEMSTORE_BYTES"] = str(self.memstore_bytes)
        env["S3SRV_GATEWAYS"] = str(self.gateways)
        r = subprocess.run(
            [os.path.join(ROOT, "scripts/rgw/start"), str(self.port)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"RGW did not start:\n{r.stderr[-3000:]}")
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            self.env[k] = v
        self.url = self.env["S3_ENDPOINT_URL"]
        self.url_2 = self.env.get("S3_ENDPOINT_URL_2")
        return self

    def stop(self) -> None:
        subprocess.run(
            [os.path.join(ROOT, "scripts/rgw/stop"), str(self.port)],
            capture_output=True,
            timeout=120,
        )
