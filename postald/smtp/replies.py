"""Every reply the SMTP server sends, as Postal words them.

Clients and tests depend on these texts byte for byte, including Postal's
unconventional codes (535 for a suspended server, 530 for an unauthorised
From).  Replies that take a value are functions.
"""

from __future__ import annotations

# -- connection ------------------------------------------------------------------
PROXY_ERROR = "502 Proxy Error"
CLOSING = "221 Closing Connection"
LINE_TOO_LONG = "500 Line too long"


def banner(hostname: str, trace_id: str) -> str:
    return f"220 {hostname} ESMTP Postal/{trace_id}"


def timeout(hostname: str) -> str:
    return f"421 {hostname} Timeout"


def shutting_down(hostname: str) -> str:
    return f"421 {hostname} Service shutting down"


# -- greeting, TLS, housekeeping --------------------------------------------------
TLS_READY = "220 Ready to start TLS"
TLS_UNAVAILABLE = "502 TLS not available"
EHLO_FIRST_LINE = "250-My capabilities are"
EHLO_STARTTLS_LINE = "250-STARTTLS"
EHLO_AUTH_LINE = "250 AUTH CRAM-MD5 PLAIN LOGIN"
OK = "250 OK"
INVALID_COMMAND = "502 Invalid/unsupported command"


def helo(hostname: str) -> str:
    return f"250 {hostname}"


# -- AUTH ------------------------------------------------------------------------
AUTH_CONTINUE = "334"
AUTH_USERNAME_PROMPT = "334 VXNlcm5hbWU6"  # base64 "Username:"
AUTH_PASSWORD_PROMPT = "334 UGFzc3dvcmQ6"  # base64 "Password:"
AUTH_PROTOCOL_ERROR = "535 Authenticated failed - protocol error"
AUTH_INVALID_CREDENTIAL = "535 Invalid credential"
AUTH_DENIED = "535 Denied"


def auth_granted(full_permalink: str) -> str:
    return f"235 Granted for {full_permalink}"


def auth_challenge(encoded_challenge: str) -> str:
    return f"334 {encoded_challenge}"


# -- envelope ------------------------------------------------------------------------
MAIL_FROM_OUT_OF_ORDER = "503 EHLO/HELO first please"
RCPT_TO_OUT_OF_ORDER = "503 EHLO/HELO and MAIL FROM first please"
RCPT_TO_EMPTY = "501 RCPT TO should not be empty"
RCPT_TO_INVALID = "501 Invalid RCPT TO"
SERVER_SUSPENDED = "535 Mail server has been suspended"
INVALID_SERVER_TOKEN = "550 Invalid server token"
INVALID_ROUTE_TOKEN = "550 Invalid route token"
ROUTE_REJECTS = "550 Route does not accept incoming messages"
AUTHENTICATION_REQUIRED = "530 Authentication required"

# -- DATA ------------------------------------------------------------------------
DATA_OUT_OF_ORDER = "503 HELO/EHLO, MAIL FROM and RCPT TO before sending data"
DATA_GO_AHEAD = "354 Go ahead"
LOOP_DETECTED = "550 Loop detected"
FROM_NOT_AUTHORISED = "530 From/Sender name is not valid"
TEMPORARY_FAILURE = "451 4.3.0 Temporary failure, please retry"


def message_too_large(max_size_mb: int) -> str:
    return f"552 Message too large (maximum size {max_size_mb}MB)"
