"""Log setup: structlog events and standard-library records come out as the same kind of line.

The tests about library loggers run a small Python process and read what it writes to its real
standard error: that is what a log collector sees, with no test-runner handlers on the root
logger. The others configure logging in this process and read a stream given to the setup.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from worker.observability.logs import configure_logging

REPO_ROOT = Path(__file__).resolve().parents[3]


def stderr_lines_of(script: str) -> list[str]:
    """Run ``script`` in a fresh interpreter (after ``configure_logging("json", "info")``)."""
    prelude = "from worker.observability.logs import configure_logging\n"
    prelude += 'configure_logging("json", "info")\n'
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout == ""
    return result.stderr.splitlines()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Undo what ``configure_logging`` does to this process's global logging state."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.handlers[:], logger.propagate) for logger in loggers]
    yield
    for logger, level, handlers, propagate in saved:
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate
    logging.captureWarnings(False)
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_a_library_line_is_one_json_object_with_event_level_logger_and_timestamp() -> None:
    lines = stderr_lines_of(
        """
        import logging
        logging.getLogger("kafka.conn").warning("broker %s unreachable", "k1:9092")
        """
    )

    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "broker k1:9092 unreachable"
    assert entry["level"] == "warning"
    assert entry["logger"] == "kafka.conn"
    assert datetime.fromisoformat(entry["timestamp"]).utcoffset() == timedelta(0)


def test_pymilvus_lines_are_json_although_pymilvus_installs_its_own_handler_on_import() -> None:
    # The worker imports pymilvus after configuring logging; pymilvus then configures its loggers.
    lines = stderr_lines_of(
        """
        import logging
        import pymilvus
        logging.getLogger("pymilvus.milvus_client").warning("collection not loaded")
        """
    )

    assert [json.loads(line)["event"] for line in lines] == ["collection not loaded"]


def test_a_structlog_event_carries_the_bound_context_variables() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    structlog.contextvars.bind_contextvars(worker_id="worker-1", batch_id="b1")

    structlog.get_logger("landmark.worker").info("batch committed", records=3)

    [entry] = json_lines(out.getvalue())
    assert entry["event"] == "batch committed"
    assert entry["records"] == 3
    assert entry["worker_id"] == "worker-1"
    assert entry["batch_id"] == "b1"
    assert entry["level"] == "info"
    assert entry["logger"] == "landmark.worker"
    assert datetime.fromisoformat(entry["timestamp"]).utcoffset() == timedelta(0)


def test_a_library_line_logged_during_a_batch_carries_the_batch_id() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    with structlog.contextvars.bound_contextvars(batch_id="b7"):
        logging.getLogger("kafka.coordinator").warning("heartbeat failed")

    [entry] = json_lines(out.getvalue())
    assert entry["batch_id"] == "b7"
    assert entry["logger"] == "kafka.coordinator"


def test_an_exception_logged_through_the_standard_library_is_one_json_line() -> None:
    lines = stderr_lines_of(
        """
        import logging
        try:
            raise ValueError("vector dimension 128, gallery has 256")
        except ValueError:
            logging.getLogger("worker.adapters.milvus").exception("search failed")
        """
    )

    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "search failed"
    assert entry["level"] == "error"
    [exception] = entry["exception"]
    assert exception["exc_type"] == "ValueError"
    assert exception["exc_value"] == "vector dimension 128, gallery has 256"
    assert exception["frames"]


def test_exception_frames_leave_local_variables_out() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    token = "s3cret-token"

    try:
        raise RuntimeError("unauthorised")
    except RuntimeError:
        logging.getLogger("pymilvus").exception("connect failed")

    assert token not in out.getvalue()


def test_every_line_of_a_mixed_run_is_json() -> None:
    lines = stderr_lines_of(
        """
        import logging
        import warnings
        import structlog
        structlog.contextvars.bind_contextvars(worker_id="worker-1")
        log = structlog.get_logger("landmark.worker")
        log.info("worker starting", topics=["images"])
        logging.getLogger("kafka.conn").warning("connection reset")
        logging.getLogger("worker.adapters.milvus").info("gallery loaded")
        import pymilvus
        logging.getLogger("pymilvus").error("server gone")
        warnings.warn("deprecated option", DeprecationWarning, stacklevel=1)
        try:
            {}["missing"]
        except KeyError:
            log.exception("batch failed")
            logging.getLogger("kafka.consumer").exception("fetch failed")
        log.info("worker stopped")
        """
    )

    entries = [json.loads(line) for line in lines]
    assert [e["event"] for e in entries if not e["event"].endswith("\n")] == [
        "worker starting",
        "connection reset",
        "gallery loaded",
        "server gone",
        "batch failed",
        "fetch failed",
        "worker stopped",
    ]
    assert len(entries) == 8  # the warning's event is the formatted warning text
    assert all(e["worker_id"] == "worker-1" for e in entries)


def test_the_workers_own_standard_library_info_lines_show_at_info() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    logging.getLogger("worker.adapters.milvus").info("gallery loaded")

    assert [e["event"] for e in json_lines(out.getvalue())] == ["gallery loaded"]


def test_noisy_libraries_stay_at_warning_by_default() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)

    logging.getLogger("kafka.conn").info("connecting to k1:9092")
    logging.getLogger("pymilvus.milvus_client").info("created client")
    logging.getLogger("kafka.conn").warning("connection reset")

    assert [e["event"] for e in json_lines(out.getvalue())] == ["connection reset"]


def test_debug_lowers_noisy_libraries_to_info_not_debug() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)

    logging.getLogger("kafka.conn").info("connecting to k1:9092")
    logging.getLogger("kafka.conn").debug("sending request")
    structlog.get_logger("landmark.worker").debug("tagged", image_id="img-1")

    assert [e["event"] for e in json_lines(out.getvalue())] == ["connecting to k1:9092", "tagged"]


def test_configuring_twice_still_writes_one_line_per_event() -> None:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    configure_logging("json", "info", stream=out)

    logging.getLogger("kafka.conn").warning("connection reset")
    structlog.get_logger("landmark.worker").info("worker stopped")

    assert [e["event"] for e in json_lines(out.getvalue())] == [
        "connection reset",
        "worker stopped",
    ]


def test_console_format_renders_library_lines_as_console_lines() -> None:
    out = io.StringIO()
    configure_logging("console", "info", stream=out)

    logging.getLogger("kafka.conn").warning("connection reset")

    [line] = out.getvalue().splitlines()
    assert "connection reset" in line
    assert "[kafka.conn]" in line
    assert not line.startswith("{")


def test_default_handler_follows_standard_error_when_it_is_swapped_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Test runners swap and close sys.stderr; a library logging at exit must not hit a closed file."""
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging("json", "info")
    monkeypatch.setattr(sys, "stderr", second)
    first.close()
    logging.getLogger("milvus_lite.server_manager").warning("server stopped")
    assert json.loads(second.getvalue().splitlines()[-1])["event"] == "server stopped"
