"""``-o metrics=[ADDR:]PORT``: the mount's counters in the Prometheus text format, served
over HTTP (prometheus_client's server, in its own thread) on the address given, loopback
when only a port is. Every scrape reads the snapshot the daemon takes once a second for
``s3fuse status`` (status.py), never the filesystem's live structures (another thread's),
so figures are up to a second old."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from s3fuse.config import ConfigError, parse_address
from s3fuse.s3.types import LATENCY_BUCKETS


class StateCollector(Collector):
    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state()
        if not s:
            return
        yield counter("s3fuse_requests", "S3 requests, by operation", "operation", s["requests"])
        retries = {op: max(0, n - s["requests"].get(op, 0)) for op, n in s["attempts"].items()}
        yield counter("s3fuse_retries", "HTTP requests sent again by the S3 client's retries, "
                      "by operation", "operation", retries)  # fmt: skip
        yield counter("s3fuse_errors", "S3 errors, by error code", "code", s["errors"])
        yield counter("s3fuse_uploaded_bytes", "bytes sent to S3", None, s["bytes_uploaded"])
        yield counter("s3fuse_downloaded_bytes", "bytes read from S3", None,
                      s["bytes_downloaded"])  # fmt: skip
        cache = s["listing_cache"]
        yield counter("s3fuse_listing_cache_hits", "lookups answered by a cached listing",
                      None, cache["hits"])  # fmt: skip
        yield counter("s3fuse_listing_cache_misses", "lookups that found no cached listing",
                      None, cache["misses"])  # fmt: skip
        up = s["uploads"]
        yield gauge("s3fuse_uploads_pending", "closed files waiting for their upload",
                    len(up["pending"]))  # fmt: skip
        yield gauge("s3fuse_uploads_in_flight", "uploads under way", len(up["in_flight"]))
        yield gauge("s3fuse_uploads_failed", "files whose upload failed (kept in the spool, "
                    "tried again)", len(up["failed"]))  # fmt: skip
        yield gauge("s3fuse_spool_bytes", "bytes in the spool directory", s["spool_bytes"])
        h = HistogramMetricFamily(
            "s3fuse_request_duration_seconds", "time per S3 call, retries included",
            labels=["operation"],
        )  # fmt: skip
        for op, lat in s["latency"].items():
            total, buckets = 0, []
            for bound, n in zip((*map(str, LATENCY_BUCKETS), "+Inf"), lat["counts"], strict=True):
                total += n
                buckets.append((bound, total))
            h.add_metric([op], buckets, lat["sum"])
        yield h


def counter(name: str, doc: str, label: str | None, value: Any) -> CounterMetricFamily:
    if label is None:
        return CounterMetricFamily(name, doc, value=value)
    c = CounterMetricFamily(name, doc, labels=[label])
    for k, v in sorted(value.items()):
        c.add_metric([k], v)
    return c


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class MetricsError(ConfigError):
    """The metrics server cannot listen where it was told to."""


class MetricsServer:
    def __init__(self, address: str, state: Callable[[], dict[str, Any]]) -> None:
        self.host, self.port = parse_address(address)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(state))
        self.server: Any = None

    def start(self) -> None:
        try:
            self.server, _ = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as e:
            raise MetricsError(f"cannot serve metrics on {self.host}:{self.port}: "
                               f"{e.strerror or e} (another program there? pick another "
                               "port)") from None  # fmt: skip

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
