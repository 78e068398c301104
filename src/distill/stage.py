"""What every stage entry point shares: load params, set up logging, turn user errors into exit 2
(and a crashed native runtime into exit 3, see :class:`distill.isolation.RuntimeCrash`)."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from distill.config import load_dotenv, read_params
from distill.errors import DistillError

log = logging.getLogger("distill")


def setup_logging() -> None:
    level = os.environ.get("DISTILL_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    for noisy in ("httpx", "httpx2", "openai", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def stage(fn: Callable[[dict[str, Any]], Any]) -> Callable[[], None]:
    """Decorate ``main(params)``; calling the result runs it as a stage process."""

    @functools.wraps(fn)
    def run() -> None:
        setup_logging()
        load_dotenv()
        try:
            fn(read_params(os.environ.get("DISTILL_PARAMS", "params.yaml")))
        except DistillError as e:  # a message for the user, never a traceback
            print(f"error: {e}", file=sys.stderr)
            sys.exit(getattr(e, "exit_status", 2))
        except KeyboardInterrupt:
            print("interrupted: finished oracle answers are cached; rerun to resume", file=sys.stderr)
            sys.exit(130)

    return run
