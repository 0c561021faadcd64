"""Debezium's outbox EventRouter on Kafka Connect as the outbox's publisher
(OUTBOX_PUBLISHER=debezium): Kafka Connect's REST API (`rest`), the publication and the
replication slot in PostgreSQL (`postgres`), the connector's configuration and registration
(`connector`), and what the operator sees of it (`status`). docs/debezium.md says all of it."""
