"""`lameduck-operator`: the operator process."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import kopf

from lameduck_operator.config import ConfigError, load_config
from lameduck_operator.handlers import build_registry
from lameduck_operator.runtime import Runtime


def main() -> int:
    try:
        config = load_config(os.environ)
    except ConfigError as err:
        print(f"lameduck-operator: {err}", file=sys.stderr)
        return 2
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if config.log_level != "DEBUG":
        # kopf logs every handled watch event at INFO; lameduck logs what it does itself.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if config.log_level != "DEBUG":
        # The leader election library logs every attempt at INFO.
        logging.getLogger("leaderelection").setLevel(logging.WARNING)
    runtime = Runtime(config)
    registry = build_registry(runtime)
    asyncio.run(kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=runtime.stop_flag))
    # Stopped for a lost Lease: exit non-zero so the pod restarts and campaigns again.
    return 1 if runtime.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
