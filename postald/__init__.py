"""postald: a self-hosted mail delivery platform compatible with Postal."""

__version__ = "0.1.0"
