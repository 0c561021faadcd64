"""The operator's pages in the admin: the Kafka status page with its charts, and the topic browser."""
