"""Observability edge: structured, redacted logs; Prometheus metrics; health endpoints."""
