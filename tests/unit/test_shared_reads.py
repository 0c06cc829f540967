"""Reads shared by SMTP sessions asking the same question at once.

The SMTP server runs on gevent with ``threading`` patched; here the module's
primitives are gevent's own, so greenlets can be paused inside a read and
killed while they wait, as sessions are.
"""

from __future__ import annotations

import types

import gevent
import gevent.event
import gevent.lock
import pytest

from postald import shared_reads
from postald.shared_reads import SharedReads


class Interrupted(BaseException):
    """Stands for a session's greenlet being interrupted (killed, timed out)."""


class _Event(gevent.event.Event):
    """gevent's Event; the ones listed in ``interrupt_on_wake`` raise once woken."""

    created: list["_Event"] = []
    interrupt_on_wake: set[int] = set()

    def __init__(self):
        super().__init__()
        self.number = len(_Event.created)
        _Event.created.append(self)

    def wait(self, timeout=None):
        result = super().wait(timeout)
        if self.number in _Event.interrupt_on_wake:
            raise Interrupted()
        return result


@pytest.fixture(autouse=True)
def gevent_primitives(monkeypatch):
    _Event.created, _Event.interrupt_on_wake = [], set()
    monkeypatch.setattr(shared_reads, "threading", types.SimpleNamespace(Event=_Event, Lock=gevent.lock.Semaphore))


class Database:
    """A stand-in answer source: each read returns the next version, and can be held open."""

    def __init__(self):
        self.version = 0
        self.reads = 0
        self.gates: list[gevent.event.Event] = []

    def hold(self) -> gevent.event.Event:
        gate = gevent.event.Event()
        self.gates.append(gate)
        return gate

    def read(self):
        self.reads += 1
        snapshot = self.version  # what the read sees: everything committed before it began
        if self.gates:
            self.gates.pop(0).wait()
        return snapshot


def settle() -> None:
    """Let every runnable greenlet run until all of them wait again."""
    for _ in range(20):
        gevent.sleep(0)


def ask(shared, database, key="q"):
    return gevent.spawn(shared.read, key, database.read)


def a_read_running_and_two_waiting(reads_held: int = 1):
    """A first asker's read held open, two more askers waiting for the next read; the gates hold the reads."""
    shared, database = SharedReads(), Database()
    gates = [database.hold() for _ in range(reads_held)]
    first = ask(shared, database)
    gevent.sleep(0)
    waiting = ask(shared, database), ask(shared, database)
    gevent.sleep(0)
    return shared, database, gates, first, waiting


def test_askers_during_a_running_read_share_the_next_one_which_sees_what_they_saw():
    shared, database = SharedReads(), Database()
    first_gate, second_gate = database.hold(), database.hold()
    first = ask(shared, database)
    gevent.sleep(0)                       # the first read is running (held open)
    database.version = 1                  # a change commits; then more sessions ask
    later = [ask(shared, database) for _ in range(5)]
    gevent.sleep(0)
    assert database.reads == 1            # they did not start reads of their own
    first_gate.set()
    settle()
    assert first.get(timeout=5) == 0      # the first read began before the change
    assert database.reads == 2            # one read for all five, begun after they asked
    second_gate.set()
    assert [greenlet.get(timeout=5) for greenlet in later] == [1] * 5
    assert len(shared) == 0


def test_different_questions_and_a_quiet_server_read_at_once():
    shared, database = SharedReads(), Database()
    gate = database.hold()
    held = ask(shared, database, "a")
    gevent.sleep(0)
    assert gevent.spawn(shared.read, "b", lambda: "b's answer").get(timeout=5) == "b's answer"
    gate.set()
    assert held.get(timeout=5) == 0
    assert [shared.read("a", database.read) for _ in range(3)] == [0, 0, 0]
    assert database.reads == 4            # one after another: nothing to share


def test_a_failed_read_fails_everyone_it_answers_and_the_next_read_runs_afresh():
    shared, database = SharedReads(), Database()
    gate = gevent.event.Event()
    calls = []

    def failing():
        calls.append(1)
        gate.wait()
        raise ValueError("database went away")

    first = gevent.spawn(shared.read, "q", failing)
    gevent.sleep(0)
    second = gevent.spawn(shared.read, "q", failing)
    third = gevent.spawn(shared.read, "q", failing)
    gevent.sleep(0)
    gate.set()
    depths = []
    for greenlet in (first, second, third):
        with pytest.raises(ValueError) as raised:
            greenlet.get(timeout=5)
        depths.append(len(raised.traceback))
    assert depths[1] == depths[2]         # the shared error's traceback does not grow with each asker
    assert len(calls) == 2                # the first read, then one shared by the other two
    assert shared.read("q", database.read) == 0
    assert len(shared) == 0


def test_an_asker_killed_while_waiting_leaves_the_others_their_answer():
    shared, database, [gate], first, (doomed, survivor) = a_read_running_and_two_waiting()
    doomed.kill()
    gate.set()
    assert first.get(timeout=5) == 0 and survivor.get(timeout=5) == 0
    assert database.reads == 2 and len(shared) == 0


def test_an_asker_chosen_to_read_but_interrupted_first_passes_the_read_on():
    shared, database, [gate], first, (chosen, other) = a_read_running_and_two_waiting()
    _Event.interrupt_on_wake.add(1)       # the event of ``chosen``, the first of the next batch
    gate.set()
    assert first.get(timeout=5) == 0
    with pytest.raises(Interrupted):
        chosen.get(timeout=5)
    assert other.get(timeout=5) == 0
    assert database.reads == 2 and len(shared) == 0


def test_an_asker_interrupted_during_its_read_hands_the_others_a_read_of_their_own():
    shared, database, (first_gate, second_gate), first, (reader, other) = a_read_running_and_two_waiting(2)
    first_gate.set()
    settle()
    assert first.get(timeout=5) == 0 and database.reads == 2   # ``reader`` is in the second read
    reader.kill(Interrupted)
    with pytest.raises(Interrupted):
        reader.get(timeout=5)
    second_gate.set()
    assert other.get(timeout=5) == 0      # not the interruption: a third read answered it
    assert database.reads == 3 and len(shared) == 0
