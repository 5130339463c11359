"""Prometheus metrics, served on /metrics by the daemon. One registry per process."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

POLLS = Counter("monitor_polls_total", "Source polls by outcome", ["source", "status"], registry=REGISTRY)
POLL_SECONDS = Histogram("monitor_poll_duration_seconds", "Wall time of one poll (fetch to commit)",
                         registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
ITEMS_NEW = Counter("monitor_items_new_total", "New items stored", ["source"], registry=REGISTRY)
ALERTS = Counter("monitor_alerts_total", "Alerts created (one per story)", registry=REGISTRY)
DELIVERIES = Counter("monitor_deliveries_total", "Notification attempts by outcome",
                     ["channel", "result"], registry=REGISTRY)
OUTBOX_PENDING = Gauge("monitor_outbox_pending", "Notifications waiting to be sent", registry=REGISTRY)
SOURCE_FAILURES = Gauge("monitor_source_consecutive_failures", "Consecutive failed polls per source",
                        ["source"], registry=REGISTRY)
SOURCE_NEXT_POLL = Gauge("monitor_source_next_poll_timestamp_seconds", "Unix time of the next poll per source",
                         ["source"], registry=REGISTRY)
SOURCE_INTERVAL = Gauge("monitor_source_poll_interval_seconds", "Adaptive polling interval per source",
                        ["source"], registry=REGISTRY)
SOURCE_ITEMS_PER_DAY = Gauge("monitor_source_items_per_day", "Estimated publishing rate per source",
                             ["source"], registry=REGISTRY)
SOURCE_LAST_SUCCESS = Gauge("monitor_source_last_success_timestamp_seconds",
                            "Unix time of the last successful poll per source", ["source"], registry=REGISTRY)

SOURCES_HELD = Gauge("monitor_replica_sources_held", "Sources this replica holds a lease on (polling now)",
                     registry=REGISTRY)


def render() -> bytes:
    return generate_latest(REGISTRY)
