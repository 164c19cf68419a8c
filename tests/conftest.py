"""Shared pytest set-up: the real Kafka broker and the sandbox come from plugins."""

pytest_plugins = ["tests.fixtures.kafka", "tests.fixtures.sandbox", "tests.fixtures.engine"]
