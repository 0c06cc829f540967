"""One database read answering everyone who asks the same question at once.

Under load, many SMTP sessions and API requests (greenlets, or threads) ask
the database the same thing at the same moment: the SMTP-IP credential of
the same client address, the route for the same recipient, the credential of
the same API key, the domain authorising the same From.  Each read costs far
more CPU (in the driver, the kernel and the database) than sharing its answer,
so :class:`SharedReads` runs at most one read per question at a time:

* an asker (a session or a request) arriving while no read of its question
  is running runs one;
* an asker arriving while one is running waits for the *next* read, which
  starts as soon as the running one ends and answers everyone who asked in the
  meantime.

Every answer therefore comes from a read begun after its asker asked: a
change committed before someone asked (a route added, a credential revoked,
a server suspended) is always in its answer, exactly as without sharing.  A
quiet server sees no difference at all; a busy one reads once per question
per database round trip instead of once per message.

A read that fails with an error fails for every asker it was answering.
An asker interrupted while it waits (a greenlet killed) leaves the others
unharmed; if it was to run the next read, the next waiting asker runs it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable


class _Asker:
    __slots__ = ("wake", "lead", "gone", "answered", "result", "error", "traceback")

    def __init__(self):
        self.wake = threading.Event()
        self.lead = False       # runs the read answering its batch
        self.gone = False       # interrupted while waiting
        self.answered = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.traceback = None   # the error's traceback as the read raised it


class _Question:
    __slots__ = ("batch", "waiting")

    def __init__(self, batch: list[_Asker]):
        self.batch = batch                   # answered by the read running (or about to run) now
        self.waiting: list[_Asker] = []      # arrived since that read began: the next batch


class SharedReads:
    """Reads shared between concurrent askers of the same question (see the module docstring)."""

    def __init__(self):
        self._questions: dict[Hashable, _Question] = {}
        self._lock = threading.Lock()

    def read(self, key: Hashable, work: Callable[[], Any]) -> Any:
        """``work()``'s answer for question ``key``, from a run of it begun after this call.

        ``work`` should only read (a write it makes is made once for all who
        shared it), and its answer must not be changed by any caller: it is
        handed to everyone that shared the read."""
        me = _Asker()
        with self._lock:
            question = self._questions.get(key)
            if question is None:
                self._questions[key] = question = _Question([me])
                me.lead = True
            else:
                question.waiting.append(me)
        if not me.lead:
            try:
                me.wake.wait()
            except BaseException:
                with self._lock:
                    me.gone = True
                    if me.lead and not me.answered:  # chosen to run the next read, never ran it: pass it on
                        question.batch.remove(me)
                        self._choose_leader(key, question)
                raise
        if me.lead and not me.answered:
            self._run(key, question, me, work)
        if me.error is not None:
            # Every asker raises the one error object: from the read's own traceback, not the
            # previous asker's (each raise would add its frames to the last).
            raise me.error.with_traceback(me.traceback)
        return me.result

    def _run(self, key: Hashable, question: _Question, me: _Asker, work: Callable[[], Any]) -> None:
        result, error = None, None
        try:
            result = work()
        except BaseException as exc:
            error = exc
        with self._lock:
            batch, question.batch = question.batch, []
            traceback = error.__traceback__ if error is not None else None
            if error is None or isinstance(error, Exception):
                for asker in batch:
                    asker.result, asker.error, asker.traceback, asker.answered = result, error, traceback, True
            else:  # this greenlet was interrupted (killed, timed out): the others still need their answer
                me.error, me.traceback, me.answered = error, traceback, True
                question.waiting[:0] = [asker for asker in batch if asker is not me]
            question.batch = [asker for asker in question.waiting if not asker.gone]
            question.waiting = []
            self._choose_leader(key, question)
            for asker in batch:
                if asker.answered and asker is not me:
                    asker.wake.set()

    def _choose_leader(self, key: Hashable, question: _Question) -> None:
        """With the lock held: the first live asker of the batch runs its read; no batch, no question."""
        question.batch = [asker for asker in question.batch if not asker.gone]
        if not question.batch:
            if question.waiting:  # the batch emptied (all interrupted): the waiting ones are next
                question.batch, question.waiting = [a for a in question.waiting if not a.gone], []
                return self._choose_leader(key, question)
            del self._questions[key]
            return
        leader = question.batch[0]
        leader.lead = True
        leader.wake.set()

    def waiting(self, key: Hashable) -> int:
        """How many askers of ``key`` wait for the read after the one running."""
        with self._lock:
            question = self._questions.get(key)
            return len(question.waiting) if question is not None else 0

    def __len__(self) -> int:
        """How many questions have a read running or waiting to run."""
        return len(self._questions)
