"""Installation-wide gauges, sampled from the main database when /metrics is scraped.

The queue and the webhook backlog live in the main database, so they are read
at scrape time rather than kept up to date by the code that changes them:

* ``postal_queue_depth``: rows in ``queued_messages`` (locked, waiting or
  due for a retry);
* ``postal_queue_oldest_message_age_seconds``: age of the oldest of them
  (0 when the queue is empty);
* ``postal_webhook_backlog``: webhook requests waiting to be sent.

Each scrape costs two small indexed queries.  They run on an engine of their
own (one connection, short timeouts, no write lock on SQLite), so a scrape
never waits for the role's connection pool and a slow or unreachable
database makes the gauges disappear from that scrape instead of hanging it.
The worker's health server exports these gauges (:func:`install_for_role`);
every worker of an installation reports the same values, so dashboards should
aggregate them with ``max``.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterator
from urllib.parse import quote

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from schema.main import QueuedMessage, WebhookRequest, utcnow
from schema.session import mariadb_engine

log = logging.getLogger(__name__)

#: Roles whose health server exports the installation-wide gauges.
SAMPLING_ROLES = ("worker",)
#: Seconds a sample may take to connect or read before the scrape goes without it.
SAMPLE_TIMEOUT = 3

_installed: "QueueCollector | None" = None
_install_lock = threading.Lock()


def sampling_engine(url: str) -> Engine:
    """A small read-only-use engine for ``url`` that fails fast instead of queueing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Read-only (never creates a missing file); autocommit reads in WAL mode
        # neither take nor wait for the write lock.
        path = quote(os.path.abspath(parsed.database or ""))
        return create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool,
                             isolation_level="AUTOCOMMIT",
                             connect_args={"timeout": SAMPLE_TIMEOUT, "check_same_thread": False})
    return mariadb_engine(parsed, pool_size=1, max_overflow=0, pool_timeout=SAMPLE_TIMEOUT, pool_pre_ping=True,
                          pool_recycle=3600, isolation_level="AUTOCOMMIT",
                          connect_args={"connect_timeout": SAMPLE_TIMEOUT, "read_timeout": SAMPLE_TIMEOUT})


class QueueCollector(Collector):
    """Samples the queue and webhook backlog of the main database at ``url``."""

    def __init__(self, url: str):
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._lock:
            if self._engine is None:
                self._engine = sampling_engine(self.url)
            return self._engine

    def describe(self) -> list:
        # Registering must not touch the database: describe without sampling.
        return list(self._families(None))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            sample = self.sample()
        except Exception as exc:  # the database is away: this scrape goes without the gauges
            log.warning("metrics.sample_failed", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
            return
        yield from self._families(sample)

    def sample(self) -> dict[str, float]:
        """The current values, read in one connection."""
        with self.engine.connect() as conn:
            depth = conn.execute(select(func.count()).select_from(QueuedMessage)).scalar_one()
            # Ids grow with creation time, so the lowest id is the oldest row (primary-key lookup).
            oldest = conn.execute(
                select(QueuedMessage.created_at).order_by(QueuedMessage.id).limit(1)).scalar()
            backlog = conn.execute(select(func.count()).select_from(WebhookRequest)).scalar_one()
        age = max(0.0, (utcnow() - oldest).total_seconds()) if oldest is not None else 0.0
        return {"depth": float(depth or 0), "oldest_age": age, "webhook_backlog": float(backlog or 0)}

    @staticmethod
    def _families(sample: dict[str, float] | None) -> Iterator[GaugeMetricFamily]:
        for name, documentation, key in (
            ("postal_queue_depth", "Queued messages waiting, locked or due for a retry (sampled)", "depth"),
            ("postal_queue_oldest_message_age_seconds", "Age of the oldest queued message (sampled)",
             "oldest_age"),
            ("postal_webhook_backlog", "Webhook requests waiting to be sent (sampled)", "webhook_backlog"),
        ):
            family = GaugeMetricFamily(name, documentation)
            if sample is not None:
                family.add_metric([], sample[key])
            yield family

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


def install(config, registry=REGISTRY) -> QueueCollector:
    """Register the collector for ``config``'s main database once per process; returns it."""
    global _installed
    with _install_lock:
        if _installed is None:
            collector = QueueCollector(config.main_db_url())
            registry.register(collector)
            _installed = collector
        return _installed


def install_for_role(name: str, config) -> QueueCollector | None:
    """Install the collector when ``name`` is a role that exports the installation-wide gauges."""
    return install(config) if name in SAMPLING_ROLES else None
