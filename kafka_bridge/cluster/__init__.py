"""The cluster as an operator and a deployer see it: topics created and grown, a group's offsets
moved, the status (brokers, topics, groups, lag), and the health check's Kafka half."""
