"""structlog configuration: JSON lines for machines, a console renderer for people.

Called once from a CLI entry point. Log calls bind ``batch_id`` and ``image_id`` so a photo can be
followed from the line that received it to the line that tagged or dead-lettered it.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog for the process.

    Args:
        log_format: ``json``, ``console``, or ``auto`` (console when ``stream`` is a terminal).
        level: ``debug``, ``info``, ``warning`` or ``error``.
        stream: where logs go; standard error by default.
    """
    out = stream if stream is not None else sys.stderr
    if log_format not in ("auto", "json", "console"):
        raise ValueError(f"unknown log format {log_format!r}")
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {level!r}")
    use_console = log_format == "console" or (log_format == "auto" and out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Libraries (kafka-python, pymilvus) log through the standard library: keep their warnings.
    logging.basicConfig(
        stream=out,
        level=max(_LEVELS[level], logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
