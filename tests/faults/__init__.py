"""Fault injection: brokers, nodes, processes, databases and platforms failing under the pipeline,
and the figures of what arrived (`pytest -rP` shows them)."""
