"""The web application: admin UI, legacy HTTP API, tracking and webhooks.

:func:`make_app` builds one Pyramid WSGI application from a
:class:`postald.config.Config`.  Each part of the site is a module included
with ``config.include(...)``; the Postal ``Config`` and the ``Database`` are
in the registry settings ``postal.config`` and ``postal.database`` (with
``postal.shared_reads``, the :class:`postald.shared_reads.SharedReads` of
the API's lookups), and
Jinja2 (``.jinja2`` templates under ``pyramid_app/templates``) is set up for
every part that renders pages.

Importing the package imports nothing else: ``python -m pyramid_app.server``
must put the standard library on the gevent hub before Pyramid is loaded
(Pyramid keeps the current request in a thread-local, which has to be
greenlet-local there).
"""

from __future__ import annotations

#: The parts of the site, included in this order.
PARTS = (
    "pyramid_app.tracking",
    "pyramid_app.api",
    "pyramid_app.api_v2",
    "pyramid_app.webhooks_public",
    "pyramid_app.ui",
    "pyramid_app.oidc",
)


def settings_for(config, database) -> dict:
    from postald.shared_reads import SharedReads

    return {
        "postal.config": config,
        "postal.database": database,
        # API requests asking the database the same question at once share one read.
        "postal.shared_reads": SharedReads(),
        "jinja2.directories": "pyramid_app:templates",
    }


def make_app(config, database=None):
    """The WSGI application for ``config`` (a :class:`schema.session.Database` is created if not given)."""
    from pyramid.config import Configurator

    if database is None:
        from schema.session import Database

        database = Database(config)
    with Configurator(settings=settings_for(config, database)) as configurator:
        configurator.include("pyramid_jinja2")
        configurator.add_jinja2_search_path("pyramid_app:templates", name=".jinja2")
        for part in PARTS:
            configurator.include(part)
        return configurator.make_wsgi_app()
