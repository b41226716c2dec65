"""Log setup: every line the worker writes is one JSON object (or one console line for people).

structlog renders the project's own events; the standard library's loggers (kafka-python,
pymilvus, the worker's own ``logging`` calls, Python warnings) go through the same processors by
structlog's ``ProcessorFormatter``, on one handler on the root logger. Both kinds of line carry
``timestamp`` (ISO, UTC), ``level``, ``logger``, ``event`` and the bound context variables;
exceptions come out as a structured ``exception`` field, not as a multi-line traceback.

Called from a CLI entry point; calling it again replaces the setup rather than adding to it. The
loop binds ``worker_id`` and, per batch, ``batch_id`` as context variables, so every line logged
while a batch is handled (the libraries' included) carries them; the per-photo lines
(``tagged`` at debug, ``dead-lettered``) carry ``image_id``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from typing import Any, TextIO

import structlog

from configuration.redaction import redact_text

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

#: The name of the handler this module puts on the root logger (found again on reconfiguration).
_HANDLER_NAME = "landmark-structlog"

#: Libraries whose standard-library loggers are chatty. They stay at WARNING unless the worker
#: runs at ``debug``, which lowers them to INFO (connections, group joins, rebalances, the
#: Milvus Lite start) and never to DEBUG: kafka-python at DEBUG logs every fetch and protocol
#: frame (and the admin client its whole configuration, credentials included), and Pillow logs
#: every PNG chunk of every decoded photo.
_NOISY_LIBRARIES = ("kafka", "pymilvus", "PIL")

#: Libraries that configure their own loggers when first imported. pymilvus runs
#: ``logging.config.dictConfig`` on import: its loggers get their own plain-text stderr handler and
#: stop propagating. The worker imports it lazily, after this setup, so import it here first and
#: take its loggers back afterwards.
_SELF_CONFIGURING_LIBRARIES = ("pymilvus",)


class _StandardErrorHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted, as logging's last-resort
    handler does: a handler holding the stream it was made with writes to a closed file once
    that stream is swapped and closed (test runners do it; library loggers then log at exit)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        """The stream is always the current ``sys.stderr``."""


def configure_logging(
    log_format: str = "auto", level: str = "info", stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library's logging for the process.

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
    threshold = _LEVELS[level]
    use_console = log_format == "console" or (log_format == "auto" and out.isatty())

    # Run by structlog for its own events and by the formatter for standard-library records.
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_renderers(use_console, colors=out.isatty()),
            _redact_line,
        ],
    )
    handler = logging.StreamHandler(out) if stream is not None else _StandardErrorHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    for module in _SELF_CONFIGURING_LIBRARIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(module)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(threshold)
    library_level = logging.INFO if threshold <= logging.DEBUG else max(threshold, logging.WARNING)
    for name in _NOISY_LIBRARIES:
        _route_to_root(name, library_level)
    logging.captureWarnings(True)


def _redact_line(_logger: Any, _name: str, line: Any) -> Any:
    """The rendered line with the user-info of any URI in it masked (a reference's or a
    library's message that quotes a ``scheme://user:password@host``)."""
    return redact_text(line) if isinstance(line, str) else line


def _renderers(use_console: bool, *, colors: bool) -> list[structlog.typing.Processor]:
    if use_console:
        # Plain tracebacks: the default (rich, when installed) prints local variables, and a
        # local may hold a secret.
        return [
            structlog.dev.ConsoleRenderer(
                colors=colors, exception_formatter=structlog.dev.plain_traceback
            )
        ]
    return [
        # Frames without local variables, for the same reason.
        structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        ),
        structlog.processors.JSONRenderer(),
    ]


def _route_to_root(name: str, level: int) -> None:
    """Set ``name``'s level and make it and its children log through the root handler only."""
    logging.getLogger(name).setLevel(level)
    for logger_name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if logger_name == name or logger_name.startswith(name + "."):
            for own in logger.handlers[:]:
                logger.removeHandler(own)
            logger.propagate = True
            if logger_name != name:
                logger.setLevel(logging.NOTSET)
