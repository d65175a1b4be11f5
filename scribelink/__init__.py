"""Shared wire contracts of Scribelink: envelope, topics, messages (docs/protocol.md)."""
