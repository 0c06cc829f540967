"""DNS checks of sending domains and tracking domains.

A domain's owner publishes four records (see :mod:`postald.services.domains`
for their exact text).  Each is checked here and given a status:

    OK        the record is there and correct
    Missing   there is no such record
    Invalid   there is a record, but it is wrong (the error text says how)

The results live on the ``domains`` row (``spf_status``/``spf_error`` …,
``dns_checked_at``); a tracking domain's CNAME check stores ``dns_status``,
``dns_error`` and ``dns_checked_at`` on its ``track_domains`` row.

Lookups go to the domain's own authoritative nameservers, or to the local
resolvers when ``postal.use_local_ns_for_domain_verification`` is set (see
:func:`resolver_for`).  The DNS work never runs inside a database
transaction: :func:`check_all_domains`, the hourly scheduled task, looks the
records up first and then stores each domain's results in a short unit of
work of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import logging
import os
import re
import socket
from typing import Iterable

import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
from sqlalchemy import or_, select

from postald import dns as postal_dns
from postald import webhooks
from postald.errors import ServiceUnavailable
from postald.services import domains as domain_service
from postald.services import track_domains as track_domain_service
from postald.signing import signing_key
from schema.main import Domain, Organization, Server, TrackDomain, utcnow

log = logging.getLogger(__name__)

OK = "OK"
MISSING = "Missing"
INVALID = "Invalid"

#: The scheduled task re-checks records last checked at least this long ago.
RECHECK_AFTER = dt.timedelta(hours=1)

DNS_ERROR_EVENT = "DomainDNSError"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one record check."""

    status: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == OK


@dataclasses.dataclass(frozen=True)
class DomainCheck:
    """The four checks of one domain."""

    spf: CheckResult
    dkim: CheckResult
    mx: CheckResult
    return_path: CheckResult

    @property
    def ok(self) -> bool:
        """SPF and DKIM correct; MX and return path correct or simply absent."""
        return (
            self.spf.ok
            and self.dkim.ok
            and self.mx.status in (OK, MISSING)
            and self.return_path.status in (OK, MISSING)
        )


# ---------------------------------------------------------------------------
# Rules: records in, status and error text out (no DNS, no database)
# ---------------------------------------------------------------------------

def to_sentence(items: Iterable[str]) -> str:
    """``a``, ``a and b``, ``a, b, and c`` — a list as an English sentence."""
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


def evaluate_spf(txt_records: Iterable[str], spf_include: str) -> CheckResult:
    """SPF: some ``v=spf1`` record at the apex must include ``spf_include``."""
    spf_records = [record for record in txt_records if record.lower().startswith("v=spf1")]
    if not spf_records:
        return CheckResult(MISSING, "No SPF record exists for this domain")
    include = re.compile(r"(?:^|\s)[+]?include:\s*" + re.escape(spf_include) + r"\.?(?=\s|$)", re.IGNORECASE)
    if not any(include.search(record) for record in spf_records):
        return CheckResult(INVALID, f"An SPF record exists but it doesn't include {spf_include}")
    return CheckResult(OK)


def evaluate_dkim(txt_records: list[str], fqdn: str, expected_record: str) -> CheckResult:
    """DKIM: exactly one TXT record at the selector, equal to the record we gave."""
    if not txt_records:
        return CheckResult(MISSING, f"No TXT records were returned for {fqdn}")
    if len(txt_records) > 1:
        return CheckResult(INVALID, f"There are {len(txt_records)} records for at {fqdn}. There should only be one.")
    published = txt_records[0].strip()
    if not published.endswith(";"):
        published += ";"
    if published != expected_record:
        return CheckResult(
            INVALID,
            f"The DKIM record at {fqdn} does not match the record we have provided. "
            "Please check it has been copied correctly.",
        )
    return CheckResult(OK)


def evaluate_mx(exchanges: Iterable[str], domain_name: str, expected: Iterable[str]) -> CheckResult:
    """MX: every configured MX host must be among the domain's exchanges."""
    present = {_normalise_host(host) for host in exchanges}
    if not present:
        return CheckResult(MISSING, f"There are no MX records for {domain_name}")
    expected = [_normalise_host(host) for host in expected]
    missing = [host for host in expected if host not in present]
    if not missing:
        return CheckResult(OK)
    if len(missing) == len(expected):
        return CheckResult(MISSING, "You have MX records but none of them point to us.")
    return CheckResult(INVALID, f"MX record(s) for {to_sentence(missing)} are missing and are required.")


def evaluate_cname(targets: list[str], name: str, expected_target: str, missing_error: str) -> CheckResult:
    """A CNAME at ``name`` must be the only record there and point to ``expected_target``."""
    targets = [_normalise_host(target) for target in targets]
    if not targets:
        return CheckResult(MISSING, missing_error)
    if len(targets) == 1 and targets[0] == _normalise_host(expected_target):
        return CheckResult(OK)
    return CheckResult(
        INVALID,
        f"There is a CNAME record at {name} but it points to {targets[0]} which is incorrect. "
        f"It should point to {expected_target}.",
    )


def evaluate_return_path(targets: list[str], rp_name: str, return_path_domain: str) -> CheckResult:
    """Return path: a CNAME at ``<prefix>.<domain>`` to ``dns.return_path_domain``."""
    return evaluate_cname(targets, rp_name, return_path_domain, f"There is no return path record at {rp_name}")


def evaluate_track_domain(targets: list[str], full_name: str, track_domain: str) -> CheckResult:
    """Tracking domain: a CNAME at ``<name>.<domain>`` to ``dns.track_domain``."""
    return evaluate_cname(targets, full_name, track_domain, f"There is no record at {full_name}")


def _normalise_host(host: str) -> str:
    return host.strip().rstrip(".").lower()


# ---------------------------------------------------------------------------
# Looking the records up
# ---------------------------------------------------------------------------

class DNSLookupError(ServiceUnavailable, postal_dns.DNSError):
    """A lookup got no usable answer: timeout, SERVFAIL, no nameserver reachable.

    Distinct from a name or record that does not exist, which is simply an
    empty result (and usually a ``Missing`` status).
    """


class RecordLookup:
    """TXT, MX, CNAME, NS and A lookups against a fixed list of nameservers."""

    def __init__(self, nameservers: list[tuple[str, int]], timeout: float):
        if not nameservers:
            raise DNSLookupError("No nameservers to query.")
        self.nameservers = list(nameservers)
        self._resolver = dns.resolver.Resolver(configure=False)
        self._resolver.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in self.nameservers]
        # ``timeout`` per try; the tries together (Postal: one, then two at
        # half the timeout) give up after twice that.
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout * 2
        self._resolver.retry_servfail = False

    def _query(self, name: str, rdtype: str) -> list:
        try:
            answer = self._resolver.resolve(dns.name.from_text(name), rdtype, search=False, raise_on_no_answer=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.Timeout as exc:
            raise DNSLookupError(f"DNS lookup of {name} ({rdtype}) timed out") from exc
        except dns.exception.DNSException as exc:
            raise DNSLookupError(f"DNS lookup of {name} ({rdtype}) failed: {exc}") from exc
        if answer.rrset is None or answer.rrset.rdtype != dns.rdatatype.from_text(rdtype):
            return []
        return list(answer.rrset)

    def txt(self, name: str) -> list[str]:
        """Each TXT record's character-strings joined, trimmed."""
        return [
            b"".join(record.strings).decode("utf-8", errors="replace").strip()
            for record in self._query(name, "TXT")
        ]

    def mx(self, name: str) -> list[tuple[int, str]]:
        """``(preference, exchange)`` pairs by preference, exchanges lower-cased."""
        pairs = [(record.preference, _host_text(record.exchange)) for record in self._query(name, "MX")]
        return sorted(pairs, key=lambda pair: pair[0])

    def cname(self, name: str) -> list[str]:
        return [_host_text(record.target) for record in self._query(name, "CNAME")]

    def ns(self, name: str) -> list[str]:
        return [_host_text(record.target) for record in self._query(name, "NS")]

    def a(self, name: str) -> list[str]:
        return [record.address for record in self._query(name, "A")]


def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


def _addresses_of(host: str) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, 53, proto=socket.IPPROTO_UDP)})


def local_nameservers(config) -> list[tuple[str, int]]:
    """The local resolvers: ``dns.nameservers`` if set, else ``dns.resolv_conf_path``."""
    if config.dns.nameservers:
        servers = []
        for entry in config.dns.nameservers:
            host, port = postal_dns.parse_nameserver(entry)
            servers.extend((address, port) for address in _addresses_of(host))
        return servers
    path = config.dns.resolv_conf_path
    if not os.path.exists(path):
        raise DNSLookupError(f"No resolver config found at {path}")
    try:
        configured = dns.resolver.Resolver(filename=path, configure=True)
    except dns.resolver.NoResolverConfiguration as exc:
        raise DNSLookupError(f"Could not find nameservers in {path}") from exc
    servers = [(str(ns.address) if hasattr(ns, "address") else str(ns), 53) for ns in configured.nameservers]
    if not servers:
        raise DNSLookupError(f"Could not find nameservers in {path}")
    return servers


def authoritative_port(config) -> int:
    """The port authoritative nameservers are asked on: 53, or the port given
    with the first ``dns.nameservers`` entry (so a test setup can serve a
    whole hierarchy on one high port)."""
    for entry in config.dns.nameservers:
        return postal_dns.parse_nameserver(entry)[1]
    return 53


def local_lookup(config) -> RecordLookup:
    return RecordLookup(local_nameservers(config), config.dns.timeout)


def authoritative_lookup(config, domain_name: str) -> RecordLookup:
    """Lookups against the nameservers that are authoritative for ``domain_name``.

    Walks from the full name towards the top-level domain asking the local
    resolvers for NS records; the first level that has some wins, and the A
    records of those nameservers are queried.  When none are found the
    local resolvers answer instead.
    """
    local = local_lookup(config)
    labels = domain_name.strip(".").split(".")
    for index in range(len(labels)):
        nameserver_names = local.ns(".".join(labels[index:]))
        if nameserver_names:
            break
    else:
        nameserver_names = []
    addresses = sorted({address for host in nameserver_names for address in local.a(host)})
    if not addresses:
        log.info("No authoritative nameservers found for %s; using the local resolvers", domain_name)
        return local
    port = authoritative_port(config)
    return RecordLookup([(address, port) for address in addresses], config.dns.timeout)


def resolver_for(config, domain_name: str) -> RecordLookup:
    """The resolver that answers for ``domain_name``.

    The domain's own authoritative nameservers, unless
    ``postal.use_local_ns_for_domain_verification`` asks for the local
    resolvers.  The same choice serves TXT verification and tracking-domain
    CNAME checks.
    """
    if config.postal.use_local_ns_for_domain_verification:
        return local_lookup(config)
    return authoritative_lookup(config, domain_name)


def run_domain_checks(config, domain: Domain, resolver=None) -> DomainCheck:
    """Look up and judge the four records of ``domain``; touches no database."""
    resolver = resolver or resolver_for(config, domain.name)
    name = domain.name
    dkim_fqdn = f"{domain_service.dkim_record_name(config, domain)}.{name}"
    rp_name = domain_service.return_path_domain(config, domain).lower()
    return DomainCheck(
        spf=evaluate_spf(resolver.txt(name), config.dns.spf_include),
        dkim=evaluate_dkim(resolver.txt(dkim_fqdn), dkim_fqdn, domain_service.dkim_record(domain)),
        mx=evaluate_mx((host for _priority, host in resolver.mx(name)), name, config.dns.mx_records),
        return_path=evaluate_return_path(resolver.cname(rp_name), rp_name, config.dns.return_path_domain),
    )


def run_track_domain_check(config, full_name: str, resolver=None) -> CheckResult:
    """Look up and judge a tracking domain's CNAME; touches no database."""
    resolver = resolver or resolver_for(config, full_name)
    return evaluate_track_domain(resolver.cname(full_name), full_name, config.dns.track_domain)


# ---------------------------------------------------------------------------
# Storing results
# ---------------------------------------------------------------------------

def store_domain_check(domain: Domain, check: DomainCheck, checked_at: dt.datetime | None = None) -> None:
    """Copy the results onto the domain row (the caller's session saves it)."""
    for field in ("spf", "dkim", "mx", "return_path"):
        result: CheckResult = getattr(check, field)
        setattr(domain, f"{field}_status", result.status)
        setattr(domain, f"{field}_error", result.error)
    domain.dns_checked_at = checked_at or utcnow()


def store_track_domain_check(track_domain: TrackDomain, result: CheckResult, checked_at: dt.datetime | None = None) -> None:
    track_domain.dns_status = result.status
    track_domain.dns_error = result.error
    track_domain.dns_checked_at = checked_at or utcnow()


def check_domain(config, session, domain: Domain, resolver=None) -> DomainCheck:
    """Check ``domain`` now and store the results on its row (a manual check).

    Returns the results; ``result.ok`` says whether the DNS is in order.  No
    webhook is fired: ``DomainDNSError`` belongs to the scheduled check.
    """
    check = run_domain_checks(config, domain, resolver)
    store_domain_check(domain, check)
    session.flush()
    return check


def check_track_domain(config, session, track_domain: TrackDomain, resolver=None) -> CheckResult:
    """Check a tracking domain's CNAME now and store the result on its row."""
    full_name = track_domain_service.full_name(session, track_domain)
    result = run_track_domain_check(config, full_name, resolver)
    store_track_domain_check(track_domain, result)
    session.flush()
    return result


def dns_error_payload(session, domain: Domain) -> dict:
    """The ``DomainDNSError`` webhook payload for a server-owned domain."""
    server = session.get(Server, domain.owner_id)
    organization = session.get(Organization, server.organization_id) if server else None
    checked_at = domain.dns_checked_at
    return {
        "server": {
            "uuid": server.uuid if server else None,
            "name": server.name if server else None,
            "permalink": server.permalink if server else None,
            "organization": organization.permalink if organization else None,
        },
        "domain": domain.name,
        "uuid": domain.uuid,
        "dns_checked_at": checked_at.replace(tzinfo=dt.timezone.utc).timestamp() if checked_at else None,
        "spf_status": domain.spf_status,
        "spf_error": domain.spf_error,
        "dkim_status": domain.dkim_status,
        "dkim_error": domain.dkim_error,
        "mx_status": domain.mx_status,
        "mx_error": domain.mx_error,
        "return_path_status": domain.return_path_status,
        "return_path_error": domain.return_path_error,
    }


# ---------------------------------------------------------------------------
# The scheduled task
# ---------------------------------------------------------------------------

@dataclasses.dataclass
class CheckAllSummary:
    """What one run of :func:`check_all_domains` did."""

    domains_checked: int = 0
    domains_failed: int = 0
    track_domains_checked: int = 0
    lookup_errors: int = 0
    webhook_requests: int = 0


def check_all_domains(config, database, now: dt.datetime | None = None) -> CheckAllSummary:
    """Re-check the DNS of every domain and tracking domain that is due.

    Due: domains checked before and last checked at least an hour ago;
    tracking domains never checked or checked at least an hour ago.  For a
    server-owned domain whose DNS is not in order a ``DomainDNSError``
    webhook is triggered.  A domain whose lookups fail (resolver down,
    timeout) keeps its previous results and is retried on the next run.
    """
    now = now or utcnow()
    due = now - RECHECK_AFTER
    summary = CheckAllSummary()
    with database.unit_of_work() as session:
        domain_ids = list(session.scalars(
            select(Domain.id).where(Domain.dns_checked_at.is_not(None), Domain.dns_checked_at <= due).order_by(Domain.id)
        ))
        track_domain_ids = list(session.scalars(
            select(TrackDomain.id).where(or_(TrackDomain.dns_checked_at.is_(None), TrackDomain.dns_checked_at <= due))
            .order_by(TrackDomain.id)
        ))
    for domain_id in domain_ids:
        _recheck_domain(config, database, domain_id, summary)
    for track_domain_id in track_domain_ids:
        _recheck_track_domain(config, database, track_domain_id, summary)
    return summary


def _recheck_domain(config, database, domain_id: int, summary: CheckAllSummary) -> None:
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
    if domain is None:
        return
    try:
        check = run_domain_checks(config, domain)
    except DNSLookupError as exc:
        log.warning("DNS check of %s skipped: %s", domain.name, exc)
        summary.lookup_errors += 1
        return
    with database.unit_of_work() as session:
        domain = session.get(Domain, domain_id)
        if domain is None:
            return
        store_domain_check(domain, check)
        session.flush()
        summary.domains_checked += 1
        if check.ok:
            return
        summary.domains_failed += 1
        if domain.owner_type == "Server":
            requests = webhooks.trigger(session, domain.owner_id, DNS_ERROR_EVENT, dns_error_payload(session, domain))
            summary.webhook_requests += len(requests)


def _recheck_track_domain(config, database, track_domain_id: int, summary: CheckAllSummary) -> None:
    with database.unit_of_work() as session:
        track_domain = session.get(TrackDomain, track_domain_id)
        full_name = track_domain_service.full_name(session, track_domain) if track_domain else None
    if track_domain is None:
        return
    try:
        result = run_track_domain_check(config, full_name)
    except DNSLookupError as exc:
        log.warning("DNS check of %s skipped: %s", full_name, exc)
        summary.lookup_errors += 1
        return
    with database.unit_of_work() as session:
        track_domain = session.get(TrackDomain, track_domain_id)
        if track_domain is not None:
            store_track_domain_check(track_domain, result)
            summary.track_domains_checked += 1


# ---------------------------------------------------------------------------
# The return-path domain's own DKIM record
# ---------------------------------------------------------------------------

def default_dkim_record_name(config) -> str:
    """Where the return-path domain's DKIM record lives."""
    return f"{config.dns.dkim_identifier}._domainkey.{config.dns.return_path_domain}"


def default_dkim_record(config) -> str:
    """The TXT value for :func:`default_dkim_record_name`, from ``signing.key``.

    Mail whose own domain has no working DKIM record is signed for the
    return-path domain with the installation's signing key; this is the
    record receivers need to verify those signatures.
    """
    return signing_key(config).dkim_record()
