"""The benchmark's child processes: `python -m bench.worker NAME ARGS_PATH RESULT_PATH`.

Sets Django up from the environment the orchestrator gave (DJANGO_SETTINGS_MODULE=config.settings.production
and its overrides), calls the worker function NAME with the JSON arguments, and writes what it
returns as JSON. With BENCH_PROFILE_DIR set, the call runs under cProfile and the top of the
profile is written there (the figures of such a run are slowed by the profiler).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

WORKERS = {
    "payloads.write": "bench.payloads:payload_file_write",
    "ceilings.kafka-python-produce": "bench.ceilings:kafka_python_produce",
    "ceilings.kafka-python-consume": "bench.ceilings:kafka_python_consume",
    "ceilings.confluent-produce": "bench.ceilings:confluent_produce",
    "ceilings.confluent-consume": "bench.ceilings:confluent_consume",
    "publish.confirm-service": "bench.publish:confirm_service",
    "publish.http-prepare": "bench.publish:http_prepare",
    "consume.backlog-prepare": "bench.consume:backlog_prepare",
    "consume.exports-reset": "bench.consume:exports_reset",
    "consume.export-consumer": "bench.consume:export_consumer_run",
    "consume.deliveries": "bench.consume:deliveries",
    "e2e.create-times": "bench.e2e:create_times",
    "e2e.generate": "bench.e2e:confirm_generate",
    "db.outbox-discard": "bench.e2e:outbox_discard",
    "e2e.debezium-start": "bench.debezium:connector_start",
    "e2e.debezium-stop": "bench.debezium:connector_stop",
    "platform.stub-drive": "bench.platform:stub_drive",
}


def main(argv: list[str]) -> int:
    name, args_path, result_path = argv
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    import django

    django.setup()
    module_name, function_name = WORKERS[name].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    args = json.loads(Path(args_path).read_text())
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")
    if profile_dir:
        result = _profiled(function, args, Path(profile_dir) / f"{Path(result_path).stem.replace('.result', '')}.txt")
    else:
        result = function(**args)
    tmp = Path(result_path + ".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(result_path)
    return 0


def _profiled(function, args: dict, out: Path):
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    result = profiler.runcall(function, **args)
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(40)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text.getvalue())
    return result


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
