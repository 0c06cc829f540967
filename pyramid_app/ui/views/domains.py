"""Domains of an organization (``org_`` routes) or of a server (``server_``
routes): list, add, verify, DNS setup, DNS check, delete."""

from __future__ import annotations

from pyramid.view import view_config, view_defaults
from sqlalchemy import select

from postald import dns_checks, domain_verification
from postald.errors import NotFound, PostalError, ValidationError
from postald.services import domains as domain_service
from pyramid_app.auth import postal_config, postal_database
from pyramid_app.ui import helpers
from pyramid_app.ui.helpers import Form
from pyramid_app.ui.views.organizations import org_context
from pyramid_app.ui.views.servers import server_context
from schema.main import Domain, Route, TrackDomain

VERIFIED_NOTICE = "{name} has been verified successfully. You now need to configure your DNS records."


@view_defaults(ui_access="login")
class DomainViews:
    def __init__(self, context, request):
        self.request = request
        self.db = request.dbsession
        self.config = postal_config(request)
        self.organization = helpers.load_organization(request)
        self.server = helpers.load_server(request, self.organization) if "server" in request.matchdict else None
        self.owner = self.server or self.organization
        self.prefix = "server_" if self.server else "org_"

    def url(self, name: str, **kw) -> str:
        kw.setdefault("org", self.organization.permalink)
        if self.server:
            kw.setdefault("server", self.server.permalink)
        return self.request.route_path(self.prefix + name, **kw)

    def context(self, title: str, **extra) -> dict:
        base = {"domain_url": self.url, "scope": "server" if self.server else "org", "dns": self.config.dns}
        base.update(extra)
        if self.server:
            return server_context(self.request, self.organization, self.server, title, active="domains",
                                  domains_tab="domains", **base)
        return org_context(self.request, self.organization, title=title, **base)

    def domain(self) -> Domain:
        owner_type = "Server" if self.server else "Organization"
        domain = self.db.scalars(select(Domain).where(
            Domain.uuid == self.request.matchdict["id"], Domain.owner_type == owner_type, Domain.owner_id == self.owner.id
        )).first()
        if domain is None:
            raise NotFound("no such domain")
        return domain

    # -- list, add, delete -------------------------------------------------------------------

    @view_config(route_name="org_domains", request_method="GET", renderer="domains/index.jinja2")
    @view_config(route_name="server_domains", request_method="GET", renderer="domains/index.jinja2")
    def index(self):
        owner_type = "Server" if self.server else "Organization"
        domains = list(self.db.scalars(select(Domain).where(Domain.owner_type == owner_type, Domain.owner_id == self.owner.id)
                                       .order_by(Domain.name)))
        return self.context("Domains", domains=domains, dns_ok=domain_service.dns_ok)

    @view_config(route_name="org_domains_new", request_method="GET", renderer="domains/new.jinja2")
    @view_config(route_name="server_domains_new", request_method="GET", renderer="domains/new.jinja2")
    def new(self):
        return self.context("Add Domain", form=Form({"verification_method": "DNS"}, model="domain"))

    @view_config(route_name="org_domains", request_method="POST")
    @view_config(route_name="server_domains", request_method="POST")
    def create(self):
        values = helpers.params(self.request, "domain")
        method = values.get("verification_method") or "DNS"
        try:
            domain = domain_verification.add_domain(self.db, self.owner, (values.get("name") or "").strip(),
                                                    self.request.user, verification_method=method)
        except ValidationError as error:
            return helpers.invalid(self.request, "domains/new.jinja2",
                                   self.context("Add Domain", form=Form(values, model="domain")), error)
        if domain.verified:
            return helpers.redirect(self.request, self.url("domain_setup", id=domain.uuid))
        return helpers.redirect(self.request, self.url("domain_verify", id=domain.uuid))

    @view_config(route_name="org_domain_item", request_method="DELETE")
    @view_config(route_name="server_domain_item", request_method="DELETE")
    def delete(self):
        domain = self.domain()
        self.db.query(Route).filter(Route.domain_id == domain.id).delete(synchronize_session=False)
        self.db.query(TrackDomain).filter(TrackDomain.domain_id == domain.id).delete(synchronize_session=False)
        self.db.delete(domain)
        return helpers.redirect(self.request, self.url("domains"))

    # -- verification ------------------------------------------------------------------------------

    def _verify_context(self, domain, **extra) -> dict:
        return self.context("Verify Domain", domain=domain,
                            txt_record=domain_verification.expected_txt_record(self.config, domain),
                            addresses=domain_verification.candidate_addresses(domain),
                            email_address=self.request.params.get("email_address", ""), **extra)

    @view_config(route_name="org_domain_verify", request_method="GET", renderer="domains/verify.jinja2")
    @view_config(route_name="server_domain_verify", request_method="GET", renderer="domains/verify.jinja2")
    def verify_page(self):
        domain = self.domain()
        if domain.verified:
            return helpers.alert(self.request, self.url("domains"), f"{domain.name} has already been verified.")
        return self._verify_context(domain)

    @view_config(route_name="org_domain_verify", request_method="POST")
    @view_config(route_name="server_domain_verify", request_method="POST")
    def verify(self):
        domain = self.domain()
        if domain.verified:
            return helpers.alert(self.request, self.url("domains"), f"{domain.name} has already been verified.")
        if domain.verification_method == "DNS":
            return self._verify_by_dns(domain)
        if "code" in self.request.POST:
            if domain_verification.verify_by_code(domain, self.request.POST.get("code")):
                return helpers.redirect(self.request, self.url("domain_setup", id=domain.uuid),
                                        notice=VERIFIED_NOTICE.format(name=domain.name))
            return helpers.flash_only(self.request, "domains/verify.jinja2", self._verify_context(domain),
                                      "Invalid verification code. Please check and try again.")
        return self._send_code(domain)

    def _verify_by_dns(self, domain):
        domain_id = domain.id
        self.db.commit()  # no transaction held open during the lookups
        domain = self.db.get(Domain, domain_id)
        try:
            verified = domain_verification.verify_by_dns(self.config, domain)
        except PostalError as error:
            return helpers.flash_only(self.request, "domains/verify.jinja2", self._verify_context(domain), error.message)
        if verified:
            return helpers.redirect(self.request, self.url("domain_setup", id=domain.uuid),
                                    notice=VERIFIED_NOTICE.format(name=domain.name))
        return helpers.flash_only(
            self.request, "domains/verify.jinja2", self._verify_context(domain),
            "We couldn't verify your domain. Please double check you've added the TXT record correctly.")

    def _send_code(self, domain):
        address = (self.request.POST.get("email_address") or "").strip()
        domain_id, uuid, user_id = domain.id, domain.uuid, self.request.user.id
        self.db.commit()  # the sender opens its own database sessions
        try:
            domain_verification.send_verification_email(self.config, postal_database(self.request), domain_id, address, user_id)
        except ValidationError:
            domain = self.db.get(Domain, domain_id)
            return helpers.flash_only(self.request, "domains/verify.jinja2", self._verify_context(domain),
                                      "Please choose one of the addresses listed.")
        from urllib.parse import quote

        url = self.url("domain_verify", id=uuid) + "?email_address=" + quote(address, safe="@")
        return helpers.redirect(self.request, url)

    # -- DNS setup and checks ----------------------------------------------------------------------

    @view_config(route_name="org_domain_setup", request_method="GET", renderer="domains/setup.jinja2")
    @view_config(route_name="server_domain_setup", request_method="GET", renderer="domains/setup.jinja2")
    def setup(self):
        domain = self.domain()
        if not domain.verified:
            return helpers.alert(self.request, self.url("domain_verify", id=domain.uuid),
                                 "You can't set up DNS for this domain until it has been verified.")
        return self.context(f"DNS Setup for {domain.name}", domain=domain, records=domain_service.describe(self.config, domain))

    @view_config(route_name="org_domain_check", request_method="POST")
    @view_config(route_name="server_domain_check", request_method="POST")
    def check(self):
        domain = self.domain()
        domain_id = domain.id
        self.db.commit()
        domain = self.db.get(Domain, domain_id)
        try:
            result = dns_checks.check_domain(self.config, self.db, domain)
        except PostalError as error:
            return helpers.alert(self.request, self.url("domain_setup", id=domain.uuid), error.message)
        if result.ok:
            return helpers.redirect(self.request, self.url("domains"), notice=f"Your DNS records for {domain.name} look good!")
        return helpers.redirect(self.request, self.url("domain_setup", id=domain.uuid),
                                alert="There seems to be something wrong with your DNS records. Check below for information.")


