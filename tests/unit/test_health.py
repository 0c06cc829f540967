"""The health server's WSGI app: /health runs the check, /metrics uses Postal's names."""

from __future__ import annotations

from webtest import TestApp

from postald import metrics
from postald.health import health_app


def test_health_ok_and_failing_check():
    assert TestApp(health_app("worker")).get("/health").text == "OK"

    def broken():
        raise ConnectionError("database unreachable")

    response = TestApp(health_app("worker", broken)).get("/health", status=503)
    assert "database unreachable" in response.text


def test_metrics_use_postal_counter_names():
    metrics.worker_errors.labels("RuntimeError").inc()
    metrics.smtp_server_connections.inc()
    text = TestApp(health_app("worker")).get("/metrics").text
    assert 'postal_worker_errors{error="RuntimeError"}' in text
    assert "# TYPE postal_worker_errors counter" in text
    assert "postal_worker_errors_total" not in text
    assert "postal_smtp_server_connections_total " in text
    assert "_created" not in text


def test_unknown_path_is_404():
    TestApp(health_app("smtp")).get("/nope", status=404)
