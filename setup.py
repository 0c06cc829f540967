from setuptools import find_packages, setup

from postald import __version__

setup(
    name="postald",
    version=__version__,
    description="A self-hosted mail delivery platform compatible with Postal",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["postald", "postald.*", "pyramid_app", "pyramid_app.*", "schema", "schema.*"]),
    include_package_data=True,
    package_data={
        "schema": ["migrations/main/*.py", "migrations/main/*.mako", "migrations/main/versions/*.py"],
        "pyramid_app": ["templates/**/*", "static/**/*"],
    },
    install_requires=[
        "gevent>=24.2,<26",
        "pyramid>=2.0,<3",
        "pyramid_jinja2>=2.10,<3",
        "waitress>=3.0,<4",
        "SQLAlchemy>=2.0.25,<2.1",
        "alembic>=1.13,<2",
        "PyMySQL>=1.1,<2",
        "dkimpy>=1.1.5,<2",
        "dnspython>=2.6,<3",
        "requests>=2.31,<3",
        "prometheus-client>=0.20,<1",
        "oic>=1.6,<2",
        "bcrypt>=4.1,<6",
        "PyYAML>=6,<7",
        "cryptography>=42",
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-timeout>=2.2",
            "WebTest>=3,<4",
            "aiosmtpd>=1.4,<2",
            "websocket-client>=1.7,<2",
            "pytest-xdist>=3.5,<4",
            "openapi-spec-validator>=0.7,<1",
            "openapi-schema-validator>=0.6,<1",
        ],
    },
    entry_points={"console_scripts": ["postal = postald.cli:main"]},
)
