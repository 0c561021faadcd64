"""The transactional outbox: the rows (store), the recorder that writes them with the change,
the publisher that sends them after the commit (sending, acknowledgements), and the relay that
sends what the fast path did not."""
