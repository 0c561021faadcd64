"""Tests against the real broker at KAFKA_BOOTSTRAP_SERVERS, and of the project's processes."""
