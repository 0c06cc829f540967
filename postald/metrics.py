"""Every Prometheus metric postald exports, defined once.

Names, types and labels follow Postal's so existing dashboards keep working;
the ones marked (beyond) are postald's own.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# Postal's exposition has no ``*_created`` series; keep /metrics the same shape.
disable_created_metrics()

#: Counters Postal exports without the ``_total`` suffix that prometheus_client
#: appends; the health server renames them back so dashboards keep working.
PLAIN_COUNTERS = ("postal_worker_job_executions", "postal_worker_errors", "postal_smtp_server_client_errors")

# -- worker ------------------------------------------------------------------
worker_job_executions = Counter(
    "postal_worker_job_executions", "Jobs that completed work", ["thread", "job"])
worker_job_runtime = Histogram(
    "postal_worker_job_runtime", "Seconds per job run", ["thread", "job"])
worker_errors = Counter("postal_worker_errors", "Errors in jobs and tasks", ["error"])
worker_task_runtime = Histogram("postal_worker_task_runtime", "Seconds per scheduled task run", ["task"])
message_queue_latency = Histogram(
    "postal_message_queue_latency", "Seconds between queueing and dequeue",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))

# -- SMTP server ---------------------------------------------------------------
smtp_server_connections = Counter("postal_smtp_server_connections", "SMTP connections accepted")
smtp_server_exceptions = Counter("postal_smtp_server_exceptions", "SMTP server exceptions", ["type", "error"])
smtp_server_tls_connections = Counter("postal_smtp_server_tls_connections", "Successful TLS handshakes")
smtp_server_commands = Counter("postal_smtp_server_commands", "Key SMTP commands received", ["command"])
smtp_server_client_errors = Counter("postal_smtp_server_client_errors", "Errors sent to SMTP clients", ["error"])
smtp_server_messages = Counter("postal_smtp_server_messages", "Messages accepted", ["type", "tls"])

# -- (beyond) ------------------------------------------------------------------
# postal_queue_depth, postal_queue_oldest_message_age_seconds and postal_webhook_backlog
# are sampled from the database at scrape time: see postald.ops_metrics.
smtp_server_sessions_open = Gauge("postal_smtp_server_sessions_open", "SMTP sessions currently open",
                                  multiprocess_mode="livesum")
delivery_latency = Histogram(
    "postal_delivery_latency", "Seconds from message creation to a final delivery result",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600))
deliveries = Counter("postal_deliveries", "Delivery results recorded", ["scope", "status"])
