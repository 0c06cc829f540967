"""Delivering incoming mail to an HTTP endpoint.

The message is POSTed as the endpoint's payload (:mod:`postald.incoming_payload`)
in its encoding, signed with the installation's key (``X-Postal-Signature``,
``X-Postal-Signature-256``, ``X-Postal-Signature-KID``), with basic auth taken
from the URL, certificates verified for https, redirects not followed, and the
endpoint's timeout (5 s unless set) applying to the whole request.

How answers are treated:

=====================================  ====================================================
answer                                 result
=====================================  ====================================================
2xx                                    Sent
no answer: timeout (-1), connection    SoftFail, retried on the back-off schedule; the rest of
refused/reset (-2), bad certificate    the batch is not tried again (``connect_error``)
(-3)
502, 503, 504                          SoftFail, retried: the endpoint is unavailable for now
429                                    HardFail, no bounce to the sender (rate limited)
any other status, including 500        HardFail at once; the sender gets a bounce
=====================================  ====================================================

Postal retries every 5xx.  postald fails a plain server error such as 500 at
once (the endpoint looked at the message and could not take it, and trying the
same request again gives the same answer) and keeps retrying the statuses that
mean "not there right now".
"""

from __future__ import annotations

import time
from urllib.parse import unquote, urlsplit, urlunsplit

import requests

from postald import __version__, incoming_payload
from postald.senders.base import HARD_FAIL, SENT, SOFT_FAIL, SendResult, Sender, new_log_id
from postald.signing import signing_key

DEFAULT_TIMEOUT = 5
OUTPUT_LIMIT = 500
TEMPORARY_STATUSES = frozenset({502, 503, 504})
RATE_LIMITED = 429

#: Pseudo status codes for requests that got no answer.
TIMED_OUT, CONNECTION_FAILED, BAD_CERTIFICATE = -1, -2, -3

USER_AGENT = f"Postal/{__version__}"


class HTTPSender(Sender):
    def __init__(self, config, endpoint):
        self.config = config
        self.endpoint = endpoint
        self.session: requests.Session | None = None

    def start(self) -> None:
        self.session = requests.Session()

    def finish(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None

    def send_message(self, message) -> SendResult:
        if self.session is None:
            self.start()
        started = time.monotonic()
        payload = incoming_payload.build_payload(message, self.endpoint)
        body, content_type = incoming_payload.encode_body(payload, self.endpoint.encoding)
        code, text = self.post(body, content_type)
        return self.result_for(code, text, round(time.monotonic() - started, 2))

    @property
    def timeout(self) -> float:
        return float(self.endpoint.timeout or DEFAULT_TIMEOUT)

    def post(self, body: bytes, content_type: str) -> tuple[int, str]:
        """POST the body; (status code or negative pseudo code, response text or error)."""
        url, auth = split_credentials(self.endpoint.url)
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        headers.update(signing_key(self.config).signature_headers(body))
        deadline = time.monotonic() + self.timeout
        try:
            response = self.session.post(url, data=body, headers=headers, auth=auth, timeout=self.timeout,
                                         allow_redirects=False, stream=True)
            with response:
                chunks = []
                for chunk in response.iter_content(8192):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise requests.Timeout("response did not finish in time")
                text = b"".join(chunks).decode(response.encoding or "utf-8", errors="replace")
            return response.status_code, text
        except requests.exceptions.SSLError as exc:
            return BAD_CERTIFICATE, f"Invalid SSL certificate ({_reason(exc)})"
        except requests.Timeout:
            return TIMED_OUT, f"Timed out after {self.timeout:g}s"
        except (requests.ConnectionError, requests.RequestException) as exc:
            return CONNECTION_FAILED, _reason(exc)

    def result_for(self, code: int, text: str, elapsed: float) -> SendResult:
        result = SendResult(
            type=HARD_FAIL,
            details=f"Received a {code} from {self.endpoint.url}",
            output=(text or "").strip()[:OUTPUT_LIMIT],
            secure=(self.endpoint.url or "").lower().startswith("https:"),
            log_id=new_log_id(),
            time=elapsed,
        )
        if 200 <= code < 300:
            result.type = SENT
        elif code < 0:
            result.type, result.retry, result.connect_error = SOFT_FAIL, True, True
        elif code in TEMPORARY_STATUSES:
            result.type, result.retry = SOFT_FAIL, True
        elif code == RATE_LIMITED:
            result.suppress_bounce = True
        return result


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """The URL without its ``user:password@`` part, and that part as basic-auth credentials."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return clean, (unquote(parts.username), unquote(parts.password or ""))


def _reason(exc: Exception) -> str:
    """A short description of a connection failure (the innermost cause)."""
    inner = exc
    while inner.args and isinstance(inner.args[0], Exception):
        inner = inner.args[0]
    reason = getattr(inner, "reason", None)
    return str(reason or inner or exc)[:OUTPUT_LIMIT]
