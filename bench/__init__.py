"""`make bench`: throughput and latency of the pipeline on the local broker, as ratios to the
ceilings of Kafka's own tools and of the raw clients, on SQLite and on PostgreSQL.

`python -m bench --help` lists the options; results go to bench/results/ (ignored by git).
"""
