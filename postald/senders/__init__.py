"""Senders deliver one message at a time to somewhere outside postald.

Every sender shares one shape (:class:`postald.senders.base.Sender`):
``start()``, then ``send_message(message)`` once per message of a batch, then
``finish()``; each send returns a :class:`postald.senders.base.SendResult`.
"""

from postald.senders.base import SendResult, Sender, new_log_id

__all__ = ["SendResult", "Sender", "new_log_id"]
