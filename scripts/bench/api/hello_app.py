"""The baseline: a bare Pyramid hello-world on waitress, with the same thread count."""

import sys

import waitress
from pyramid.config import Configurator
from pyramid.response import Response


def hello(request):
    return Response("Hello world!")


def main() -> None:
    port, threads = int(sys.argv[1]), int(sys.argv[2])
    with Configurator() as config:
        config.add_route("hello", "/")
        config.add_view(hello, route_name="hello")
        app = config.make_wsgi_app()
    waitress.serve(app, host="127.0.0.1", port=port, threads=threads, ident="hello", _quiet=True)


if __name__ == "__main__":
    main()
