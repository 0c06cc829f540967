"""postald.off_hub: blocking C work runs beside the gevent hub, not on it.

Each check runs in a fresh interpreter patched as the servers patch themselves."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import bcrypt


def run_patched(code: str) -> dict:
    script = "from gevent import monkey; monkey.patch_all()\n" + textwrap.dedent(code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_calls_run_on_another_os_thread_only_on_a_patched_hub():
    found = run_patched("""
        import json
        from gevent import monkey
        from postald import off_hub
        native_id = monkey.get_original("threading", "get_native_id")
        print(json.dumps({"on_hub": off_hub.on_hub(), "hub": native_id(), "call": off_hub.call(native_id),
                          "args": off_hub.call(divmod, 17, 5)}))
    """)
    assert found["on_hub"] is True
    assert found["call"] != found["hub"]
    assert found["args"] == [3, 2]

    from postald import off_hub
    import threading
    assert off_hub.on_hub() is False  # the test process itself is not patched
    assert off_hub.call(threading.get_native_id) == threading.get_native_id()


def test_a_password_hash_leaves_other_greenlets_running():
    """bcrypt takes a good fraction of a second; a greenlet ticking every 5 ms
    keeps ticking meanwhile (on the hub itself it would not tick at all)."""
    found = run_patched("""
        import json, time
        import gevent
        from postald.services import users

        ticks = []
        def ticker():
            while True:
                ticks.append(time.monotonic())
                gevent.sleep(0.005)

        gevent.spawn(ticker)
        gevent.sleep(0.02)
        before, started = len(ticks), time.monotonic()
        digest = users.hash_password("correct horse battery")
        elapsed, during = time.monotonic() - started, len(ticks) - before

        class User:
            password_digest = digest
        print(json.dumps({"elapsed": elapsed, "during": during, "digest": digest,
                          "right": users.check_password(User, "correct horse battery"),
                          "wrong": users.check_password(User, "wrong horse battery")}))
    """)
    assert found["elapsed"] > 0.05, "bcrypt was too quick for the check to mean anything"
    assert found["during"] >= 5
    assert found["right"] is True and found["wrong"] is False
    assert bcrypt.checkpw(b"correct horse battery", found["digest"].encode())


def test_dkim_keys_are_generated_on_a_patched_hub():
    found = run_patched("""
        import json
        from cryptography.hazmat.primitives import serialization
        from postald.services import domains
        key = serialization.load_pem_private_key(domains.generate_dkim_key().encode(), password=None)
        print(json.dumps({"bits": key.key_size}))
    """)
    assert found["bits"] == 1024
