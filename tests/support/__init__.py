"""What the tests share: factories, waiting, the broker's records and offsets, free ports, the
consumer in a thread, processes, brokers and clusters of a test's own, the platform stub."""
