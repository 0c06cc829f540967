"""Postal's inbound SMTP server.

``protocol`` is the conversation (sans I/O), ``backend`` its database-backed
decisions (``routing``, ``storage``, ``received``, ``auth``), ``server`` the
gevent listeners and the process entry point, ``replies`` every reply text.
"""
