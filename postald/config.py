"""Configuration loading for postald.

Every setting is declared exactly once in ``SCHEMA`` below (group, key, type,
default, description and, where Postal had one, the legacy version 1 path).
The per-group frozen dataclasses, the environment variable names, the legacy
mapping and the type checks are all derived from that table.

Layering (lowest to highest priority): embedded defaults, the YAML file,
environment variables.

Usage::

    from postald.config import load
    config = load()                       # or load(path, environ={...})
    config.postal.web_hostname
    config.main_db_url()
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Mapping, NamedTuple
from urllib.parse import parse_qs, quote, urlsplit

import yaml

__all__ = [
    "Config",
    "ConfigError",
    "Key",
    "SCHEMA",
    "SMTPRelay",
    "load",
]

logger = logging.getLogger("postald.config")

CONFIG_FILE_ROOT = "$config-file-root"
DEFAULT_CONFIG_PATH = os.path.join(".", "config", "postal.yml")
DEFAULT_DATA_DIR = os.path.join(".", "data")
SSL_MODES = ("None", "Auto", "STARTTLS", "TLS")

_TRUE = {"true", "yes", "1", "on"}
_FALSE = {"false", "no", "0", "off"}


class ConfigError(Exception):
    """The configuration could not be loaded; the message says where and why."""


# ---------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------

# Type codes: S string, I integer, B boolean, A list of strings, F float.
_TYPE_NAMES = {
    "S": "a string",
    "I": "an integer",
    "B": "a boolean (true/false/yes/no/1/0)",
    "A": "a list of strings",
    "F": "a number",
}
_PY_TYPES = {"S": str, "I": int, "B": bool, "A": list, "F": float}


@dataclasses.dataclass(frozen=True)
class Key:
    group: str
    name: str
    type: str
    default: Any
    description: str = ""
    legacy: str | None = None  # dotted path in a version 1 file
    choices: tuple[str, ...] | None = None

    @property
    def dotted(self) -> str:
        return f"{self.group}.{self.name}"

    @property
    def env_name(self) -> str:
        return f"{self.group}_{self.name}".upper()


def _group(group: str, *rows: tuple) -> list[Key]:
    keys = []
    for row in rows:
        name, typ, default, description, *rest = row
        legacy = rest[0] if len(rest) > 0 else None
        choices = rest[1] if len(rest) > 1 else None
        keys.append(Key(group, name, typ, default, description, legacy, choices))
    return keys


_SAME = object()  # marker: legacy path is "<group>.<name>"


def _expand_legacy(keys: list[Key]) -> list[Key]:
    return [
        dataclasses.replace(k, legacy=k.dotted) if k.legacy is _SAME else k
        for k in keys
    ]


_R = CONFIG_FILE_ROOT

SCHEMA: list[Key] = _expand_legacy([
    *_group(
        "postal",
        ("web_hostname", "S", "postal.example.com", "hostname of the web UI", "web.host"),
        ("web_protocol", "S", "https", "protocol of the web UI", "web.protocol"),
        ("smtp_hostname", "S", "postal.example.com",
         "hostname of the SMTP server (Received headers, HELO fallback)", "dns.smtp_server_hostname"),
        ("use_ip_pools", "B", False, "enable IP pools", "general.use_ip_pools"),
        ("default_maximum_delivery_attempts", "I", 18, "max delivery attempts before HardFail",
         "general.maximum_delivery_attempts"),
        ("default_maximum_hold_expiry_days", "I", 7, "days a held message is kept held before expiry",
         "general.maximum_hold_expiry_days"),
        ("default_suppression_list_automatic_removal_days", "I", 30,
         "days an address stays on a suppression list", "general.suppression_list_removal_delay"),
        ("default_spam_threshold", "I", 5, "default server spam threshold", "general.default_spam_threshold"),
        ("default_spam_failure_threshold", "I", 20, "default server spam failure threshold",
         "general.default_spam_failure_threshold"),
        ("use_local_ns_for_domain_verification", "B", False,
         "use local resolvers instead of the domain's nameservers for verification/DNS checks",
         "general.use_local_ns_for_domains"),
        ("use_resent_sender_header", "B", True, "prepend Resent-Sender header on outgoing mail",
         "general.use_resent_sender_header"),
        ("signing_key_path", "S", f"{_R}/signing.key",
         "RSA private key for webhook/HTTP signing and fallback DKIM"),
        ("smtp_relays", "A", [], "relays as smtp://host:port?ssl_mode=X", "smtp_relays"),
        ("trusted_proxies", "A", [], "extra IPs trusted as reverse proxies (IP/CIDR)"),
        ("queued_message_lock_stale_days", "I", 1, "queued messages locked longer than this are deleted"),
        ("batch_queued_messages", "B", True, "dequeue messages in batches by destination"),
    ),
    *_group(
        "web_server",
        ("default_port", "I", 5000, "web port unless PORT env set", "web_server.port"),
        ("default_bind_address", "S", "127.0.0.1", "bind address unless BIND_ADDRESS env set",
         "web_server.bind_address"),
        ("max_threads", "I", 5, "requests each web server process handles at once (its waitress threads, greenlets)", _SAME),
        ("processes", "I", 1, "(beyond) web server processes sharing the port, one CPU core each "
                              "(postal web-server; use with MariaDB)"),
        ("default_health_server_port", "I", 9092, "(beyond) web health server port"),
        ("default_health_server_bind_address", "S", "127.0.0.1", "(beyond) web health server bind address"),
    ),
    *_group(
        "worker",
        ("default_health_server_port", "I", 9090, "worker health server port"),
        ("default_health_server_bind_address", "S", "127.0.0.1", "worker health server bind address"),
        ("threads", "I", 2, "work threads per worker"),
        ("poll_interval", "F", 1.0, "(beyond) seconds between polls for new work"),
        ("lock_timeout", "F", 300.0,
         "(beyond) seconds after which a queued message locked by a worker that stopped renewing it is released"),
    ),
    *_group(
        "main_db",
        ("url", "S", None, "(beyond) SQLAlchemy URL replacing host/port/username/password/database; "
         "TLS to MariaDB when its query asks for it (ssl_ca=..., ssl_verify_cert=true ...), else plain text"),
        ("host", "S", "localhost", "database host", _SAME),
        ("port", "I", 3306, "database port", _SAME),
        ("username", "S", "postal", "database user", _SAME),
        ("password", "S", None, "database password", _SAME),
        ("database", "S", "postal", "database name", _SAME),
        ("pool_size", "I", 5, "connection pool size", _SAME),
        ("encoding", "S", "utf8mb4", "connection character set", _SAME),
    ),
    *_group(
        "message_db",
        ("url", "S", None, "(beyond) SQLAlchemy URL for message databases; {database} is replaced; "
         "TLS as for main_db.url"),
        ("host", "S", "localhost", "server for per-server DBs", _SAME),
        ("port", "I", 3306, "database port", _SAME),
        ("username", "S", "postal", "database user", _SAME),
        ("password", "S", None, "database password", _SAME),
        ("encoding", "S", "utf8mb4", "connection character set"),
        ("database_name_prefix", "S", "postal", "DB name <prefix>-server-<id>", "message_db.prefix"),
    ),
    *_group(
        "logging",
        ("rails_log_enabled", "B", False, "enable framework logger", "logging.rails_log"),
        ("sentry_dsn", "S", None, "Sentry DSN for exceptions", "general.exception_url"),
        ("enabled", "B", True, "log to stdout (else discard)"),
        ("highlighting_enabled", "B", False, "colourise log lines"),
        ("format", "S", "console", "(beyond) log line format", None, ("console", "json")),
    ),
    *_group(
        "gelf",
        ("host", "S", None, "GELF (Graylog) host; GELF logging enabled when set", "logging.graylog.host"),
        ("port", "I", 12201, "GELF port", "logging.graylog.port"),
        ("facility", "S", "postal", "facility name", "logging.graylog.facility"),
    ),
    *_group(
        "smtp_server",
        ("default_port", "I", 25, "SMTP port unless PORT env set", "smtp_server.port"),
        ("default_bind_address", "S", "::", "bind address unless BIND_ADDRESS env set",
         "smtp_server.bind_address"),
        ("default_health_server_port", "I", 9091, "SMTP server health port"),
        ("default_health_server_bind_address", "S", "127.0.0.1", "SMTP server health bind address"),
        ("tls_enabled", "B", False, "offer STARTTLS (needs cert)", _SAME),
        ("tls_certificate_path", "S", f"{_R}/smtp.cert", "TLS certificate (PEM)", _SAME),
        ("tls_private_key_path", "S", f"{_R}/smtp.key", "TLS private key (PEM)", _SAME),
        ("tls_ciphers", "S", None, "cipher override", _SAME),
        ("ssl_version", "S", "SSLv23", "SSL versions", _SAME),
        ("proxy_protocol", "B", False, "accept PROXY protocol v1", _SAME),
        ("log_connections", "B", False, "log connections", "smtp_server.log_connect"),
        ("max_message_size", "I", 14, "max message size in MB", _SAME),
        ("log_ip_address_exclusion_matcher", "S", None, "regex of IPs not to log"),
        ("smtps_port", "I", None, "(beyond) implicit-TLS listener port; disabled when unset"),
        ("idle_timeout", "I", 300, "(beyond) seconds an SMTP session may wait for a line before 421 and close"),
        ("processes", "I", 1, "(beyond) SMTP server processes sharing the port, one CPU core each "
                              "(postal smtp-server; use with MariaDB)"),
    ),
    *_group(
        "dns",
        ("mx_records", "A", ["mx1.postal.example.com", "mx2.postal.example.com"], "expected MX records", _SAME),
        ("spf_include", "S", "spf.postal.example.com", "SPF include target", _SAME),
        ("return_path_domain", "S", "rp.postal.example.com", "return path hostname", "dns.return_path"),
        ("route_domain", "S", "routes.postal.example.com", "domain of route forward addresses", _SAME),
        ("track_domain", "S", "track.postal.example.com", "CNAME target for track domains", _SAME),
        ("helo_hostname", "S", None, "HELO name for outgoing SMTP", _SAME),
        ("dkim_identifier", "S", "postal", "DKIM selector base", _SAME),
        ("domain_verify_prefix", "S", "postal-verification", "prefix of TXT verification record", _SAME),
        ("custom_return_path_prefix", "S", "psrp",
         "subdomain on customer domains pointing to return path", _SAME),
        ("timeout", "I", 5, "DNS timeout seconds"),
        ("resolv_conf_path", "S", "/etc/resolv.conf", "local nameserver list"),
        ("nameservers", "A", [], "(beyond) host or host:port resolvers used instead of resolv_conf_path"),
    ),
    *_group(
        "smtp",
        ("host", "S", "127.0.0.1", "SMTP host for application mail", _SAME),
        ("port", "I", 25, "SMTP port", _SAME),
        ("username", "S", None, "SMTP user", _SAME),
        ("password", "S", None, "SMTP password", _SAME),
        ("authentication_type", "S", "login", "SMTP authentication type"),
        ("enable_starttls", "B", False, "always use STARTTLS"),
        ("enable_starttls_auto", "B", True, "use STARTTLS when offered"),
        ("openssl_verify_mode", "S", "peer", "certificate verification (none disables checks)"),
        ("from_name", "S", "Postal", "sender name", _SAME),
        ("from_address", "S", "postal@example.com", "sender address", _SAME),
    ),
    *_group(
        "rails",
        ("environment", "S", "production", "environment name", _SAME),
        ("secret_key", "S", None, "cookie/session signing secret", _SAME),
    ),
    *_group(
        "rspamd",
        ("enabled", "B", False, "use rspamd for spam checks", _SAME),
        ("host", "S", "127.0.0.1", "rspamd host", _SAME),
        ("port", "I", 11334, "rspamd port", _SAME),
        ("ssl", "B", False, "connect with TLS", _SAME),
        ("password", "S", None, "rspamd password", _SAME),
        ("flags", "S", None, "rspamd flags", _SAME),
    ),
    *_group(
        "spamd",
        ("enabled", "B", False, "use SpamAssassin spamd", _SAME),
        ("host", "S", "127.0.0.1", "spamd host", _SAME),
        ("port", "I", 783, "spamd port", _SAME),
    ),
    *_group(
        "clamav",
        ("enabled", "B", False, "use ClamAV for virus checks", _SAME),
        ("host", "S", "127.0.0.1", "clamd host", _SAME),
        ("port", "I", 2000, "clamd port", _SAME),
    ),
    *_group(
        "smtp_client",
        ("open_timeout", "I", 30, "outgoing SMTP connect timeout (seconds)", _SAME),
        ("read_timeout", "I", 30, "outgoing SMTP read timeout (seconds)", _SAME),
        ("port", "I", 25, "(beyond) port of MX hosts (a test runs its SMTP sink on a high port)"),
    ),
    *_group(
        "migration_waiter",
        ("enabled", "B", False, "wait for DB migrations before starting a process"),
        ("attempts", "I", 120, "attempts before giving up"),
        ("sleep_time", "I", 2, "seconds between attempts"),
    ),
    *_group(
        "oidc",
        ("enabled", "B", False, "enable OpenID Connect login"),
        ("local_authentication_enabled", "B", True, "allow password login too"),
        ("name", "S", "OIDC Provider", "button label"),
        ("issuer", "S", None, "issuer URL"),
        ("identifier", "S", None, "client id"),
        ("secret", "S", None, "client secret"),
        ("scopes", "A", ["openid", "email"], "scopes"),
        ("uid_field", "S", "sub", "claim for UID"),
        ("email_address_field", "S", "email", "claim for e-mail"),
        ("name_field", "S", "name", "claim for name"),
        ("discovery", "B", True, "use .well-known/openid-configuration"),
        ("authorization_endpoint", "S", None, "used when discovery is false"),
        ("token_endpoint", "S", None, "used when discovery is false"),
        ("userinfo_endpoint", "S", None, "used when discovery is false"),
        ("jwks_uri", "S", None, "used when discovery is false"),
    ),
])

GROUPS: tuple[str, ...] = tuple(dict.fromkeys(k.group for k in SCHEMA))
KEYS: dict[str, Key] = {k.dotted: k for k in SCHEMA}


def _class_name(group: str) -> str:
    return "".join(part.capitalize() for part in group.split("_")) + "Config"


def _annotation(key: Key) -> Any:
    typ = list[str] if key.type == "A" else _PY_TYPES[key.type]
    return typ | None if key.default is None else typ


GROUP_CLASSES: dict[str, type] = {
    group: dataclasses.make_dataclass(
        _class_name(group),
        [(k.name, _annotation(k)) for k in SCHEMA if k.group == group],
        frozen=True,
        namespace={"__module__": __name__},
    )
    for group in GROUPS
}
globals().update({cls.__name__: cls for cls in GROUP_CLASSES.values()})


# ---------------------------------------------------------------------------
# Value conversion
# ---------------------------------------------------------------------------


class _BadValue(Exception):
    pass


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise _BadValue() from None
        if not isinstance(value, list):
            raise _BadValue()
        return [_to_str(v) for v in value]
    return [part.strip() for part in text.split(",") if part.strip()]


def _to_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise _BadValue()


def _convert(key: Key, value: Any) -> Any:
    """Convert a YAML or environment value to the key's type or raise _BadValue."""
    t = key.type
    if t == "S":
        result = _to_str(value)
    elif t == "I":
        if isinstance(value, bool):
            raise _BadValue()
        if isinstance(value, int):
            result = value
        elif isinstance(value, float) and value.is_integer():
            result = int(value)
        elif isinstance(value, str):
            try:
                result = int(value.strip())
            except ValueError:
                raise _BadValue() from None
        else:
            raise _BadValue()
    elif t == "F":
        if isinstance(value, bool):
            raise _BadValue()
        if isinstance(value, (int, float)):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise _BadValue() from None
        else:
            raise _BadValue()
    elif t == "B":
        if isinstance(value, bool):
            result = value
        elif isinstance(value, int) and value in (0, 1):
            result = bool(value)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            result = value.strip().lower() in _TRUE
        else:
            raise _BadValue()
    elif t == "A":
        if isinstance(value, str):
            result = _split_list(value)
        elif isinstance(value, (list, tuple)):
            result = [_to_str(v) for v in value]
        else:
            raise _BadValue()
    else:  # pragma: no cover - schema error
        raise AssertionError(f"unknown type {t!r}")
    if key.choices is not None and result not in key.choices:
        raise _BadValue()
    return result


def _expected(key: Key) -> str:
    if key.choices is not None:
        return "one of " + ", ".join(repr(c) for c in key.choices)
    return _TYPE_NAMES[key.type]


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------
# SMTP relays
# ---------------------------------------------------------------------------


class SMTPRelay(NamedTuple):
    host: str
    port: int = 25
    ssl_mode: str = "Auto"


def parse_smtp_relay(text: str) -> SMTPRelay:
    """Parse ``smtp://host:port?ssl_mode=X`` (scheme optional). Raises ValueError."""
    raw = text.strip()
    if "://" not in raw:
        raw = "smtp://" + raw
    parts = urlsplit(raw)
    if parts.scheme.lower() != "smtp":
        raise ValueError(f"relay {text!r} must use the smtp:// scheme")
    host = parts.hostname
    if not host:
        raise ValueError(f"relay {text!r} has no host")
    try:
        port = parts.port or 25
    except ValueError:
        raise ValueError(f"relay {text!r} has an invalid port") from None
    ssl_mode = "Auto"
    query = parse_qs(parts.query)
    if query.get("ssl_mode"):
        wanted = query["ssl_mode"][0]
        matches = [m for m in SSL_MODES if m.lower() == wanted.lower()]
        if not matches:
            raise ValueError(f"relay {text!r} has ssl_mode {wanted!r}; expected one of {', '.join(SSL_MODES)}")
        ssl_mode = matches[0]
    return SMTPRelay(host, port, ssl_mode)


def _legacy_relays(value: Any, where: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ConfigError(f"{where}: smtp_relays (legacy postal.smtp_relays) must be a list of "
                          f"mappings with hostname, port and ssl_mode, got {_describe(value)}")
    relays = []
    for entry in value:
        if isinstance(entry, str):
            relays.append(entry)
            continue
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: smtp_relays (legacy postal.smtp_relays): each entry must be a "
                              f"mapping with hostname, port and ssl_mode, got {_describe(entry)}")
        hostname = entry.get("hostname")
        if hostname is None or hostname == "":
            continue
        hostname = str(hostname)
        if ":" in hostname and not hostname.startswith("["):
            hostname = f"[{hostname}]"
        url = f"smtp://{hostname}"
        if entry.get("port") is not None:
            url += f":{entry['port']}"
        if entry.get("ssl_mode") is not None:
            url += f"?ssl_mode={entry['ssl_mode']}"
        relays.append(url)
    return relays


# ---------------------------------------------------------------------------
# Config object
# ---------------------------------------------------------------------------


def _quote(text: str) -> str:
    return quote(text, safe="")


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class Config:
    """The loaded configuration. Each schema group is an attribute (a frozen dataclass)."""

    # Attributes are set once in __init__; the groups are annotated for readers.
    postal: Any
    web_server: Any
    worker: Any
    main_db: Any
    message_db: Any
    logging: Any
    gelf: Any
    smtp_server: Any
    dns: Any
    smtp: Any
    rails: Any
    rspamd: Any
    spamd: Any
    clamav: Any
    smtp_client: Any
    migration_waiter: Any
    oidc: Any

    def __init__(
        self,
        values: Mapping[str, Any],
        *,
        path: str | None,
        root: str,
        data_dir: str,
        environ: dict[str, str],
        explicit: frozenset[str],
        warnings: list[str],
    ) -> None:
        for group, cls in GROUP_CLASSES.items():
            fields = {k.name: values[k.dotted] for k in SCHEMA if k.group == group}
            setattr(self, group, cls(**fields))
        self.path = path
        self.root = root
        self.data_dir = data_dir
        self.environ = environ
        self.explicit = explicit
        self.warnings = warnings

    def __repr__(self) -> str:
        return f"<Config path={self.path!r}>"

    # -- generic access ------------------------------------------------------

    def get(self, dotted: str) -> Any:
        """Value of ``"group.key"``."""
        if dotted not in KEYS:
            raise KeyError(dotted)
        group, name = dotted.split(".", 1)
        return getattr(getattr(self, group), name)

    def is_explicit(self, dotted: str) -> bool:
        """True when the key was set by the file or the environment (not a default)."""
        return dotted in self.explicit

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {group: dataclasses.asdict(getattr(self, group)) for group in GROUPS}

    # -- derived values -----------------------------------------------------

    def smtp_relays(self) -> list[SMTPRelay]:
        return [parse_smtp_relay(r) for r in self.postal.smtp_relays]

    def _sqlite_url(self, name: str) -> str:
        return "sqlite:///" + os.path.join(self.data_dir, f"{name}.sqlite3")

    @staticmethod
    def _mysql_url(host, port, username, password, database, encoding) -> str:
        auth = _quote(username or "")
        if password is not None:
            auth += ":" + _quote(password)
        query = f"?charset={quote(encoding, safe='')}" if encoding else ""
        return (f"mysql+pymysql://{auth}@{_host_for_url(host)}:{port}/"
                f"{quote(database, safe='-_.')}{query}")

    def _main_db_explicit(self) -> bool:
        return any(self.is_explicit(f"main_db.{f}") for f in ("host", "port", "username", "password", "database"))

    def _message_db_explicit(self) -> bool:
        return any(self.is_explicit(f"message_db.{f}") for f in ("host", "port", "username", "password"))

    def main_db_url(self) -> str:
        """SQLAlchemy URL of the main database."""
        db = self.main_db
        if db.url:
            return db.url
        if self._main_db_explicit():
            return self._mysql_url(db.host, db.port, db.username, db.password, db.database, db.encoding)
        return self._sqlite_url("postal")

    def message_db_url(self, database: str) -> str:
        """SQLAlchemy URL of the message database called ``database``."""
        mdb = self.message_db
        if mdb.url:
            return mdb.url.replace("{database}", database)
        if self._message_db_explicit():
            return self._mysql_url(mdb.host, mdb.port, mdb.username, mdb.password, database, mdb.encoding)
        if self.is_mysql:
            if self.main_db.url:
                from sqlalchemy.engine import make_url

                url = make_url(self.main_db.url).set(database=database)
                return url.render_as_string(hide_password=False)
            db = self.main_db
            return self._mysql_url(db.host, db.port, db.username, db.password, database, mdb.encoding)
        return self._sqlite_url(database)

    def message_db_name(self, server_id: int) -> str:
        """Name of the message database of mail server ``server_id``."""
        return f"{self.message_db.database_name_prefix}-server-{server_id}"

    @property
    def is_mysql(self) -> bool:
        return self.main_db_url().startswith("mysql")


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


def _find_path(path: str | os.PathLike | None, environ: Mapping[str, str]) -> str | None:
    if path is not None:
        explicit = os.fspath(path)
    elif environ.get("POSTAL_CONFIG_FILE_PATH"):
        explicit = environ["POSTAL_CONFIG_FILE_PATH"]
    else:
        return os.path.abspath(DEFAULT_CONFIG_PATH) if os.path.isfile(DEFAULT_CONFIG_PATH) else None
    if not os.path.exists(explicit):
        raise ConfigError(f"{explicit}: config file not found")
    if not os.path.isfile(explicit):
        raise ConfigError(f"{explicit}: config file is not a regular file")
    return os.path.abspath(explicit)


def _read_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            document = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"{path}: invalid YAML: {detail}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping of configuration groups at the top level, "
                          f"got {_describe(document)}")
    return document


def _file_values_v2(document: dict, path: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for group, section in document.items():
        if group == "version":
            continue
        if group not in GROUPS:
            raise ConfigError(f"{path}: unknown configuration section {group!r}; expected one of "
                              f"{', '.join(GROUPS)} (or version)")
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: {group}: expected a mapping of keys, got {_describe(section)}")
        for name, value in section.items():
            dotted = f"{group}.{name}"
            key = KEYS.get(dotted)
            if key is None:
                raise ConfigError(f"{path}: unknown key {dotted!r}")
            if value is None:
                continue
            try:
                values[dotted] = _convert(key, value)
            except _BadValue:
                raise ConfigError(f"{path}: {dotted}: expected {_expected(key)}, got {_describe(value)}") from None
    return values


def _legacy_lookup(document: dict, legacy: str, path: str) -> Any:
    node: Any = document
    walked = []
    for part in legacy.split("."):
        if node is None:
            return None
        if not isinstance(node, dict):
            raise ConfigError(f"{path}: {'.'.join(walked)}: expected a mapping of keys, got {_describe(node)}")
        node = node.get(part)
        walked.append(part)
    return node


def _file_values_v1(document: dict, path: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in SCHEMA:
        if key.legacy is None:
            continue
        value = _legacy_lookup(document, key.legacy, path)
        if value is None:
            continue
        if key.dotted == "postal.smtp_relays":
            value = _legacy_relays(value, path)
            if value is None:
                continue
        try:
            values[key.dotted] = _convert(key, value)
        except _BadValue:
            raise ConfigError(f"{path}: {key.legacy} (legacy name of {key.dotted}): expected "
                              f"{_expected(key)}, got {_describe(value)}") from None
    return values


def _file_values(path: str, warnings: list[str]) -> dict[str, Any]:
    document = _read_yaml(path)
    version = document.get("version")
    if isinstance(version, bool) or version not in (None, 1, 2, "1", "2"):
        raise ConfigError(f"{path}: version: invalid value {_describe(version)}. Must be 1 or 2")
    if version in (2, "2"):
        return _file_values_v2(document, path)
    warnings.append(
        f"{path} uses the legacy (version 1) format; its values were mapped to the version 2 keys. "
        f"Add 'version: 2' and use the version 2 layout to silence this warning."
    )
    return _file_values_v1(document, path)


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in SCHEMA:
        raw = environ.get(key.env_name)
        if raw is None or raw.strip() == "":
            continue  # an empty variable counts as not set
        try:
            values[key.dotted] = _convert(key, raw)
        except _BadValue:
            raise ConfigError(f"environment variable {key.env_name} ({key.dotted}): expected "
                              f"{_expected(key)}, got {_describe(raw)}") from None
    return values


def _substitute_root(value: Any, root: str) -> Any:
    if isinstance(value, str):
        return value.replace(CONFIG_FILE_ROOT, root)
    if isinstance(value, list):
        return [_substitute_root(v, root) for v in value]
    return value


def _validate(values: dict[str, Any], path: str | None) -> None:
    where = path or "environment"
    for relay in values["postal.smtp_relays"]:
        try:
            parse_smtp_relay(relay)
        except ValueError as exc:
            raise ConfigError(f"{where}: postal.smtp_relays: {exc} "
                              f"(expected smtp://host:port?ssl_mode=X)") from None


def load(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load the configuration: defaults < YAML file < environment variables.

    ``path`` defaults to ``$POSTAL_CONFIG_FILE_PATH``, else ``./config/postal.yml`` if it exists, else no file.
    ``environ`` defaults to ``os.environ``; a plain dict copy is kept on the result.
    """
    env = dict(os.environ if environ is None else environ)
    warnings: list[str] = []

    config_path = _find_path(path, env)
    root = os.path.dirname(config_path) if config_path else os.path.abspath(os.path.dirname(DEFAULT_CONFIG_PATH))
    data_dir = os.path.abspath(env.get("POSTAL_DATA_DIR") or DEFAULT_DATA_DIR)

    values: dict[str, Any] = {k.dotted: k.default for k in SCHEMA}
    explicit: set[str] = set()
    layers = []
    if config_path:
        layers.append(_file_values(config_path, warnings))
    layers.append(_env_values(env))
    for layer in layers:
        values.update(layer)
        explicit.update(layer)

    values = {dotted: _substitute_root(v, root) for dotted, v in values.items()}
    # Defaults are shared between loads: never hand out the schema's list objects.
    values = {dotted: list(v) if isinstance(v, list) else v for dotted, v in values.items()}
    _validate(values, config_path)

    silenced = env.get("SILENCE_POSTAL_CONFIG_MESSAGES", "").strip().lower() in _TRUE
    if not silenced:
        for message in warnings:
            logger.warning(message)

    return Config(
        values,
        path=config_path,
        root=root,
        data_dir=data_dir,
        environ=env,
        explicit=frozenset(explicit),
        warnings=warnings,
    )
