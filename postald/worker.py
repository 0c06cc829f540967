"""The worker: delivers queued messages and runs the scheduled tasks.

:class:`WorkerRole` runs ``worker.threads`` work loops, a tasks loop and a lock
keeper, as threads (greenlets once gevent has patched the process):

* a work loop claims the next batch of queued messages
  (:func:`postald.queue.claim_batch`), processes it, then gives the webhook
  job its turn; when neither found work it sleeps ``worker.poll_interval``
  seconds, or less: a message queued in this process or in another process
  of the installation on this host (:func:`postald.wakeup.notify_queued`)
  wakes a loop at once;
* the tasks loop runs the scheduled tasks every minute in the one worker that
  holds the ``tasks`` role;
* the lock keeper renews the locks this worker holds and releases locks that
  other, dead workers stopped renewing (``worker.lock_timeout``).

``stop()`` lets current batches finish, then releases the ``tasks`` role.
``python -m postald.worker`` (``postal worker``) runs one until SIGTERM/SIGINT.
"""

from __future__ import annotations

if __name__ == "__main__":  # ``python -m postald.worker``: patch before anything imports socket or ssl
    from gevent import monkey

    monkey.patch_all()

import logging
import signal
import threading
import time

from postald import metrics, queue, scheduled_tasks, wakeup
from postald.processing import process_batch

log = logging.getLogger(__name__)

TASKS_INTERVAL = 60.0
ELIGIBLE_IPS_TTL = 60.0


class Doorbell:
    """Wakes one idle work loop per ring, so one queued message does not send every loop to the database.

    A ring while every loop is busy is remembered (up to ``limit``) and lets
    the next loop that runs out of work look again instead of sleeping.
    """

    def __init__(self, limit: int):
        self._condition = threading.Condition()
        self._rings = 0
        self._limit = limit
        self._closed = False

    def ring(self) -> None:
        with self._condition:
            self._rings = min(self._rings + 1, self._limit)
            self._condition.notify()

    def wait(self, timeout: float) -> None:
        with self._condition:
            if not self._rings and not self._closed:
                self._condition.wait(timeout)
            if self._rings:
                self._rings -= 1

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()


class WorkerRole:
    """One worker process's loops; ``start()`` returns at once, ``stop()`` is graceful."""

    def __init__(self, config, database, *, health: bool = True, tasks: bool = True):
        self.config = config
        self.database = database
        self.health = health
        self.tasks_enabled = tasks
        self.name = queue.process_name()
        self.health_server = None
        self._stopping = threading.Event()
        self._doorbell = Doorbell(max(1, int(config.worker.threads)))
        self._threads: list[threading.Thread] = []
        self._active_lockers: set[str] = set()
        self._lockers_lock = threading.Lock()
        self._eligible_ips: tuple[float, list[int]] | None = None
        self._holds_tasks_role = False
        self._wakeup_listener: wakeup.Listener | None = None
        #: (until when, requests_queued() then) after a look at the webhook queue found nothing.
        self._webhooks_idle: tuple[float, int] | None = None

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self._stopping.clear()
        self._doorbell = Doorbell(max(1, int(self.config.worker.threads)))
        wakeup.subscribe(self.wake)
        directory = wakeup.directory_for(self.config)
        wakeup.use_directory(directory)
        self._wakeup_listener = wakeup.Listener(directory, self.wake)  # woken by other processes
        if self.health and self.health_server is None:
            from postald.health import start_health_server

            self.health_server = start_health_server(
                "worker", self.config, self.config.worker.default_health_server_port,
                self.config.worker.default_health_server_bind_address, check=self.database.ping)
        loops = [(f"work-{i + 1}", self._work_loop) for i in range(max(1, int(self.config.worker.threads)))]
        loops.append(("locks", self._lock_keeper_loop))
        if self.tasks_enabled:
            loops.append(("tasks", self._tasks_loop))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"postald-worker-{name}", args=(name,), daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("worker.started", extra={"threads": self.config.worker.threads, "worker": self.name})

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()
        self._doorbell.close()
        wakeup.unsubscribe(self.wake)
        if self._wakeup_listener is not None:
            self._wakeup_listener.close()
            self._wakeup_listener = None
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()
        if self._holds_tasks_role:
            try:
                scheduled_tasks.release_role(self.database, scheduled_tasks.TASKS_ROLE, self.name)
            except Exception:
                log.exception("worker.release_role_failed")
            self._holds_tasks_role = False
        if self.health_server is not None:
            self.health_server.stop(timeout=1)
            self.health_server = None
        log.info("worker.stopped")

    def wake(self) -> None:
        """Something was queued: let one idle work loop look now."""
        self._doorbell.ring()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- work loops --------------------------------------------------------------------

    def _work_loop(self, thread_name: str) -> None:
        while not self.stopping:
            did_work = False
            try:
                did_work = self._timed_job(thread_name, "ProcessQueuedMessagesJob", self.process_queued_messages)
                did_work = self._timed_job(thread_name, "ProcessWebhookRequestsJob", self.process_webhook_requests) \
                    or did_work
            except Exception as exc:  # a database outage: log, back off, carry on
                metrics.worker_errors.labels(error=type(exc).__name__).inc()
                log.exception("worker.job_failed", extra={"worker_thread": thread_name})
                self._stopping.wait(1.0)
            if not did_work and not self.stopping:
                self._doorbell.wait(float(self.config.worker.poll_interval))

    def _timed_job(self, thread_name: str, job: str, run) -> bool:
        started = time.monotonic()
        did_work = run(thread_name)
        if did_work:
            metrics.worker_job_runtime.labels(thread=thread_name, job=job).observe(time.monotonic() - started)
            metrics.worker_job_executions.labels(thread=thread_name, job=job).inc()
        return did_work

    def eligible_ip_address_ids(self) -> list[int]:
        cached = self._eligible_ips
        if cached is None or time.monotonic() - cached[0] > ELIGIBLE_IPS_TTL:
            with self.database.unit_of_work() as session:
                cached = (time.monotonic(), queue.eligible_ip_address_ids(session))
            self._eligible_ips = cached
        return cached[1]

    def process_queued_messages(self, thread_name: str = "main") -> bool:
        """Claim and process one batch; False when the queue had nothing ready."""
        locker = queue.new_locker(f"thread:{thread_name}")
        with self._lockers_lock:
            self._active_lockers.add(locker)
        leftovers: list[int] = []
        try:
            rows = queue.claim_batch(self.database, locker, batch=self.config.postal.batch_queued_messages,
                                     ip_address_ids=self.eligible_ip_address_ids())
            if not rows:
                return False
            leftovers = [row.id for row in rows]  # all of them, until the batch says otherwise
            if len(rows) > 1:
                log.info("worker.batch_claimed", extra={"count": len(rows), "batch_key": rows[0].batch_key})
            with self.database.unit_of_work() as session:
                leftovers = process_batch(self.config, self.database, session, rows, locker=locker,
                                          should_stop=lambda: self.stopping)
            return True
        finally:
            with self._lockers_lock:
                self._active_lockers.discard(locker)
            if leftovers:
                self._unlock_leftovers(leftovers, locker)

    def _unlock_leftovers(self, queued_ids: list[int], locker: str) -> None:
        """Give back whatever a batch left locked (stopped early, or an error while recording)."""
        try:
            queue.unlock(self.database, queued_ids, locker=locker)
        except Exception:
            log.exception("worker.unlock_failed", extra={"locker": locker})

    def process_webhook_requests(self, thread_name: str = "main") -> bool:
        """Send one queued webhook request.

        After finding none, the loops look again only once ``worker.poll_interval``
        has passed, or at once when this process queues a request: the work
        loops would otherwise ask the database after every batch of messages.
        """
        from postald import webhook_sender, webhooks

        idle = self._webhooks_idle
        if idle is not None and time.monotonic() < idle[0] and webhooks.requests_queued() == idle[1]:
            return False
        queued_before = webhooks.requests_queued()
        found = bool(webhook_sender.process_next(self.config, self.database,
                                                 queue.new_locker(f"thread:{thread_name}")))
        self._webhooks_idle = None if found else \
            (time.monotonic() + float(self.config.worker.poll_interval), queued_before)
        return found

    # -- lock keeper and tasks ------------------------------------------------------------

    def _lock_keeper_loop(self, _name: str) -> None:
        timeout = float(self.config.worker.lock_timeout)
        interval = max(0.2, min(timeout / 4, 30.0))
        while not self._stopping.wait(interval):
            try:
                with self._lockers_lock:
                    lockers = list(self._active_lockers)
                queue.renew_locks(self.database, lockers)
                queue.release_stale_locks(self.database, timeout)
            except Exception as exc:
                metrics.worker_errors.labels(error=type(exc).__name__).inc()
                log.exception("worker.lock_keeper_failed")

    def _tasks_loop(self, _name: str) -> None:
        while not self.stopping:
            try:
                self.run_tasks_once()
            except Exception as exc:
                metrics.worker_errors.labels(error=type(exc).__name__).inc()
                log.exception("worker.tasks_failed")
            self._stopping.wait(TASKS_INTERVAL)

    def run_tasks_once(self) -> list[str]:
        """Run due scheduled tasks if this worker holds (or wins) the tasks role."""
        acquired = scheduled_tasks.acquire_role(self.database, scheduled_tasks.TASKS_ROLE, self.name)
        self._holds_tasks_role = bool(acquired)
        if not acquired:
            return []
        return scheduled_tasks.run_due_tasks(self.config, self.database)


def run(config) -> None:
    """Run a worker until SIGTERM or SIGINT."""
    from schema.session import Database

    database = Database(config)
    worker = WorkerRole(config, database)
    stop = threading.Event()

    def request_stop(signum, _frame=None):
        log.info("worker.signal", extra={"signal": signal.Signals(signum).name})
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.start()
        while not stop.wait(1.0):
            pass
    finally:
        worker.stop()
        database.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    from postald import logging_setup
    from postald.config import load

    config = load()
    logging_setup.configure(config, "worker")
    run(config)


if __name__ == "__main__":
    main()
