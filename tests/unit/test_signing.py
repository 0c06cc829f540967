"""The installation signing key: created once, even by processes racing to create it."""

from __future__ import annotations

import multiprocessing
import os
import stat

from postald.signing import SigningKey, ensure_signing_key


def _create(path, results):
    results.put(ensure_signing_key(path))


def test_created_once_with_private_permissions(tmp_path):
    path = str(tmp_path / "keys" / "signing.key")
    assert ensure_signing_key(path) is True
    assert ensure_signing_key(path) is False
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert SigningKey(open(path, "rb").read()).dkim_record().startswith("v=DKIM1;")
    assert [name for name in os.listdir(tmp_path / "keys")] == ["signing.key"]


def test_racing_processes_create_exactly_one_key(tmp_path):
    path = str(tmp_path / "signing.key")
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_create, args=(path, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    outcomes = [results.get(timeout=5) for _ in workers]
    assert outcomes.count(True) == 1 and outcomes.count(False) == 3
    SigningKey(open(path, "rb").read())  # a complete, loadable key
    assert os.listdir(tmp_path) == ["signing.key"]
