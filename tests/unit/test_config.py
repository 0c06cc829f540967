"""Configuration: embedded defaults, postal.yml, environment overrides, legacy keys, bad values."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from postald.config import SCHEMA, ConfigError, SMTPRelay, load

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_config_in_cwd(tmp_path, monkeypatch):
    """Run each test where no ./config/postal.yml exists."""
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, text: str, name: str = "postal.yml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------


def test_every_key_has_its_default_without_file_or_environment(tmp_path):
    config = load(environ={})
    assert config.path is None
    for key in SCHEMA:
        expected = key.default
        if isinstance(expected, str):
            expected = expected.replace("$config-file-root", str(tmp_path / "config"))
        assert config.get(key.dotted) == expected, key.dotted


def test_defaults_match_postal(tmp_path):
    config = load(environ={})
    assert (config.postal.web_hostname, config.postal.web_protocol) == ("postal.example.com", "https")
    assert config.postal.default_maximum_delivery_attempts == 18
    assert config.postal.use_resent_sender_header is True and config.postal.use_ip_pools is False
    assert (config.web_server.default_port, config.web_server.default_bind_address) == (5000, "127.0.0.1")
    assert (config.smtp_server.default_port, config.smtp_server.default_bind_address) == (25, "::")
    assert config.smtp_server.max_message_size == 14 and config.smtp_server.default_health_server_port == 9091
    assert (config.worker.default_health_server_port, config.worker.threads) == (9090, 2)
    assert config.dns.mx_records == ["mx1.postal.example.com", "mx2.postal.example.com"]
    assert config.dns.nameservers == [] and config.dns.timeout == 5
    assert config.oidc.scopes == ["openid", "email"] and config.oidc.discovery is True
    assert config.logging.enabled is True and config.logging.format == "console"
    assert config.gelf.port == 12201 and config.gelf.host is None
    assert config.migration_waiter.attempts == 120
    assert config.postal.signing_key_path == str(tmp_path / "config" / "signing.key")


def test_embedded_database_default_is_sqlite_in_the_data_dir(tmp_path):
    config = load(environ={})
    assert config.main_db_url() == "sqlite:///" + str(tmp_path / "data" / "postal.sqlite3")
    assert config.message_db_url("postal-server-3") == "sqlite:///" + str(tmp_path / "data" / "postal-server-3.sqlite3")
    assert not config.is_mysql
    elsewhere = load(environ={"POSTAL_DATA_DIR": str(tmp_path / "var")})
    assert elsewhere.main_db_url() == "sqlite:///" + str(tmp_path / "var" / "postal.sqlite3")


def test_default_lists_are_not_shared_between_loads():
    first = load(environ={})
    first.dns.mx_records.append("mx3.example.com")
    assert load(environ={}).dns.mx_records == ["mx1.postal.example.com", "mx2.postal.example.com"]


# ---------------------------------------------------------------------------
# YAML file and environment
# ---------------------------------------------------------------------------

V2 = """\
version: 2
postal:
  web_hostname: mail.example.com
  use_ip_pools: yes
  smtp_relays:
    - smtp://relay.example.com:587?ssl_mode=STARTTLS
    - relay2.example.com
  signing_key_path: $config-file-root/keys/signing.pem
smtp_server:
  default_port: 2525
  tls_enabled: true
dns:
  mx_records: [mx.example.com]
  nameservers: ["127.0.0.1:5353"]
main_db:
  host: db.example.com
  username: postal
  password: "p@ss word"
  database: postal_main
message_db:
  host: db.example.com
  username: postal
  password: "p@ss word"
  database_name_prefix: pm
logging:
  format: json
"""


def test_version_2_file_sets_values_and_resolves_the_file_root(tmp_path):
    path = write(tmp_path, V2)
    config = load(path, environ={})
    assert config.path == str(path)
    assert config.postal.web_hostname == "mail.example.com" and config.postal.use_ip_pools is True
    assert config.smtp_server.default_port == 2525 and config.smtp_server.tls_enabled is True
    assert config.dns.mx_records == ["mx.example.com"] and config.dns.nameservers == ["127.0.0.1:5353"]
    assert config.postal.signing_key_path == str(tmp_path / "keys" / "signing.pem")
    assert config.smtp_server.tls_certificate_path == str(tmp_path / "smtp.cert")
    assert config.logging.format == "json"
    assert config.smtp_relays() == [SMTPRelay("relay.example.com", 587, "STARTTLS"),
                                    SMTPRelay("relay2.example.com", 25, "Auto")]
    assert config.is_mysql
    assert config.main_db_url() == "mysql+pymysql://postal:p%40ss%20word@db.example.com:3306/postal_main?charset=utf8mb4"
    assert config.message_db_url(config.message_db_name(7)) == (
        "mysql+pymysql://postal:p%40ss%20word@db.example.com:3306/pm-server-7?charset=utf8mb4")
    assert config.is_explicit("smtp_server.default_port") and not config.is_explicit("smtp_server.max_message_size")


def test_config_file_is_found_through_the_environment_and_in_config_dir(tmp_path):
    path = write(tmp_path, "version: 2\npostal:\n  web_hostname: env.example.com\n", "custom.yml")
    assert load(environ={"POSTAL_CONFIG_FILE_PATH": str(path)}).postal.web_hostname == "env.example.com"
    (tmp_path / "config").mkdir()
    write(tmp_path / "config", "version: 2\npostal:\n  web_hostname: local.example.com\n")
    assert load(environ={}).postal.web_hostname == "local.example.com"


def test_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, V2)
    config = load(path, environ={
        "POSTAL_WEB_HOSTNAME": "env.example.com",
        "SMTP_SERVER_DEFAULT_PORT": "2626",
        "POSTAL_USE_IP_POOLS": "false",
        "DNS_MX_RECORDS": "a.example.com, b.example.com",
        "DNS_NAMESERVERS": '["::1:53"]',
        "POSTAL_SMTP_RELAYS": "",  # empty counts as not set
        "LOGGING_FORMAT": "console",
        "MAIN_DB_URL": "sqlite:////srv/postal/main.sqlite3",
        "MESSAGE_DB_URL": "sqlite:////srv/postal/{database}.sqlite3",
    })
    assert config.postal.web_hostname == "env.example.com"
    assert config.smtp_server.default_port == 2626 and config.postal.use_ip_pools is False
    assert config.dns.mx_records == ["a.example.com", "b.example.com"] and config.dns.nameservers == ["::1:53"]
    assert len(config.smtp_relays()) == 2
    assert config.logging.format == "console"
    assert config.main_db_url() == "sqlite:////srv/postal/main.sqlite3" and not config.is_mysql
    assert config.message_db_url("pm-server-1") == "sqlite:////srv/postal/pm-server-1.sqlite3"


def test_message_databases_follow_a_mysql_main_db_url():
    config = load(environ={"MAIN_DB_URL": "mysql+pymysql://root@127.0.0.1:3306/postal?charset=utf8mb4"})
    assert config.message_db_url("postal-server-2") == "mysql+pymysql://root@127.0.0.1:3306/postal-server-2?charset=utf8mb4"


# ---------------------------------------------------------------------------
# Legacy (version 1) files
# ---------------------------------------------------------------------------

V1 = """\
web:
  host: legacy.example.com
  protocol: http
general:
  use_ip_pools: true
  maximum_delivery_attempts: 10
  exception_url: https://sentry.example.com/1
main_db:
  host: legacy-db
  password: secret
message_db:
  host: legacy-db
  prefix: legacy
smtp_server:
  port: 2525
  log_connect: true
dns:
  return_path: rp.legacy.example.com
  smtp_server_hostname: smtp.legacy.example.com
logging:
  graylog:
    host: graylog.example.com
    port: 12222
smtp_relays:
  - hostname: relay.example.com
    port: 2525
    ssl_mode: TLS
  - hostname:
"""


def test_legacy_file_is_mapped_to_version_2_keys_with_a_warning(tmp_path, caplog):
    path = write(tmp_path, V1)
    with caplog.at_level(logging.WARNING, logger="postald.config"):
        config = load(path, environ={})
    assert config.postal.web_hostname == "legacy.example.com" and config.postal.web_protocol == "http"
    assert config.postal.smtp_hostname == "smtp.legacy.example.com"
    assert config.postal.use_ip_pools is True and config.postal.default_maximum_delivery_attempts == 10
    assert config.logging.sentry_dsn == "https://sentry.example.com/1"
    assert config.main_db.host == "legacy-db" and config.main_db.password == "secret"
    assert config.message_db.database_name_prefix == "legacy"
    assert config.smtp_server.default_port == 2525 and config.smtp_server.log_connections is True
    assert config.dns.return_path_domain == "rp.legacy.example.com"
    assert (config.gelf.host, config.gelf.port) == ("graylog.example.com", 12222)
    assert config.smtp_relays() == [SMTPRelay("relay.example.com", 2525, "TLS")]
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert str(path) in caplog.records[0].getMessage() and "legacy" in caplog.records[0].getMessage()


def test_legacy_warning_can_be_silenced_and_environment_still_wins(tmp_path, caplog):
    path = write(tmp_path, V1)
    with caplog.at_level(logging.WARNING, logger="postald.config"):
        config = load(path, environ={"SILENCE_POSTAL_CONFIG_MESSAGES": "true", "SMTP_SERVER_DEFAULT_PORT": "26"})
    assert caplog.records == []
    assert config.smtp_server.default_port == 26


# ---------------------------------------------------------------------------
# Bad values: one clear error naming the key and the file
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("version: 2\nsmtp_server:\n  default_port: twenty-five\n",
     "smtp_server.default_port: expected an integer, got 'twenty-five'"),
    ("version: 2\npostal:\n  use_ip_pools: maybe\n", "postal.use_ip_pools: expected a boolean"),
    ("version: 2\ndns:\n  mx_records: {a: b}\n", "dns.mx_records: expected a list of strings"),
    ("version: 2\nlogging:\n  format: xml\n", "logging.format: expected one of 'console', 'json', got 'xml'"),
    ("version: 2\nmailboxes:\n  size: 1\n", "unknown configuration section 'mailboxes'"),
    ("version: 2\npostal:\n  web_hostnme: x\n", "unknown key 'postal.web_hostnme'"),
    ("version: 2\npostal: [1, 2]\n", "postal: expected a mapping of keys"),
    ("version: 3\n", "version: invalid value 3. Must be 1 or 2"),
    ("version: 2\npostal:\n  smtp_relays: ['smtp://relay:notaport']\n", "postal.smtp_relays"),
    ("- just\n- a list\n", "expected a mapping of configuration groups"),
    ("version: 2\npostal:\n  web_hostname: [unclosed\n", "invalid YAML"),
    ("general:\n  maximum_delivery_attempts: lots\n",
     "general.maximum_delivery_attempts (legacy name of postal.default_maximum_delivery_attempts)"),
])
def test_bad_file_values_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path, environ={})
    text = str(error.value)
    assert text.startswith(str(path) + ":") and message in text
    assert "\n" not in text


@pytest.mark.parametrize("name, value, message", [
    ("SMTP_SERVER_DEFAULT_PORT", "abc", "SMTP_SERVER_DEFAULT_PORT (smtp_server.default_port): expected an integer"),
    ("POSTAL_USE_IP_POOLS", "perhaps", "POSTAL_USE_IP_POOLS (postal.use_ip_pools): expected a boolean"),
    ("WORKER_POLL_INTERVAL", "soon", "WORKER_POLL_INTERVAL (worker.poll_interval): expected a number"),
    ("DNS_NAMESERVERS", "[1, 2", "DNS_NAMESERVERS (dns.nameservers): expected a list of strings"),
])
def test_bad_environment_values_name_the_variable(name, value, message):
    with pytest.raises(ConfigError) as error:
        load(environ={name: value})
    assert message in str(error.value)


def test_a_named_config_file_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load(tmp_path / "missing.yml", environ={})
    with pytest.raises(ConfigError, match="config file not found"):
        load(environ={"POSTAL_CONFIG_FILE_PATH": str(tmp_path / "nope.yml")})


# ---------------------------------------------------------------------------
# The example configuration shipped in etc/
# ---------------------------------------------------------------------------


def test_example_config_loads_without_warnings_and_lists_every_key(caplog):
    import yaml

    path = REPO / "etc" / "postal.yml"
    with caplog.at_level(logging.WARNING, logger="postald.config"):
        config = load(path, environ={})
    assert caplog.records == [] and config.warnings == []
    document = yaml.safe_load(path.read_text())
    assert document["version"] == 2
    listed = {f"{group}.{key}" for group, section in document.items() if group != "version" for key in section}
    assert listed == {key.dotted for key in SCHEMA}, "regenerate it: scripts/generate-example-config"
    # Every value in the example is the default (the example documents; it changes nothing).
    defaults = load(environ={})
    for key in SCHEMA:
        if "$config-file-root" not in str(key.default):
            assert config.get(key.dotted) == defaults.get(key.dotted), key.dotted
    assert os.path.dirname(config.postal.signing_key_path) == str(path.parent)
