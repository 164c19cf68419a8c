"""The transform's view of ISO 4217: the one table shared with the sandbox."""

from consumer.iso4217 import ISO_4217

__all__ = ["ISO_4217"]
