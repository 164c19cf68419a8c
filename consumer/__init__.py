"""xconv: purchase events from Kafka to X Ads Web Conversions, at least once."""

__version__ = "0.1.0"
