"""Shared wire contracts of Scribelink: envelope, topics, messages (docs/protocol.md)."""

from importlib import metadata

try:
    # the one version: pyproject.toml's, as installed (a release sets it there)
    __version__ = metadata.version("scribelink")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
