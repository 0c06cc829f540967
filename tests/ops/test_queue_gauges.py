"""The scrape-time queue gauges of postald.ops_metrics, against a real main database."""

from __future__ import annotations

import datetime as dt

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from postald.ops_metrics import QueueCollector
from schema.main import QueuedMessage, WebhookRequest, utcnow

GAUGES = ("postal_queue_depth", "postal_queue_oldest_message_age_seconds", "postal_webhook_backlog")


def scrape(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {sample.name: sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def registered(config) -> tuple[CollectorRegistry, QueueCollector]:
    registry = CollectorRegistry()
    collector = QueueCollector(config.main_db_url())
    registry.register(collector)
    return registry, collector


def test_an_empty_queue_reads_zero(config, database):
    registry, collector = registered(config)
    try:
        assert scrape(registry) == {name: 0.0 for name in GAUGES}
    finally:
        collector.close()


def test_gauges_follow_the_queue_and_webhook_backlog(config, database):
    now = utcnow()
    with database.unit_of_work() as session:
        for minutes_ago, locked in ((30, False), (5, True), (1, False)):
            created = now - dt.timedelta(minutes=minutes_ago)
            session.add(QueuedMessage(server_id=1, message_id=minutes_ago, domain="example.org", created_at=created,
                                      updated_at=created, locked_by="w" if locked else None,
                                      retry_after=now + dt.timedelta(hours=1)))
        session.add_all([WebhookRequest(server_id=1, url="http://127.0.0.1:9/", event="MessageSent", payload="{}")
                         for _ in range(2)])
    registry, collector = registered(config)
    try:
        values = scrape(registry)
        assert values["postal_queue_depth"] == 3 and values["postal_webhook_backlog"] == 2
        assert 30 * 60 <= values["postal_queue_oldest_message_age_seconds"] < 30 * 60 + 60

        with database.unit_of_work() as session:
            oldest = session.query(QueuedMessage).order_by(QueuedMessage.id).first()
            session.delete(oldest)
            session.query(WebhookRequest).delete()
        values = scrape(registry)  # sampled again at every scrape
        assert values["postal_queue_depth"] == 2 and values["postal_webhook_backlog"] == 0
        assert 5 * 60 <= values["postal_queue_oldest_message_age_seconds"] < 6 * 60
    finally:
        collector.close()


def test_an_unreachable_database_leaves_the_gauges_out_without_failing_the_scrape(config, database, tmp_path):
    registry = CollectorRegistry()
    if database.is_mysql:
        url = "mysql+pymysql://root@127.0.0.1:1/nowhere"  # nothing listens on port 1
    else:
        url = f"sqlite:///{tmp_path / 'missing' / 'main.sqlite3'}"
    collector = QueueCollector(url)
    registry.register(collector)
    try:
        text = generate_latest(registry).decode()
        assert "postal_queue_depth" not in text
        assert not (tmp_path / "missing" / "main.sqlite3").exists()  # a scrape never creates a database
    finally:
        collector.close()
