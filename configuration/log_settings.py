"""The logging group: format and level of the structured logs."""

from __future__ import annotations

from typing import ClassVar, Literal

from configuration.base import CommandSettings, setting


class LogLevel(CommandSettings):
    """How much a command logs (commands that log plain text take this part only)."""

    group_title: ClassVar[str] = "logging"

    log_level: Literal["debug", "info", "warning", "error"] = setting("info", help="log level")


class LogSettings(LogLevel):
    """How a long-running command logs."""

    group_title: ClassVar[str] = "logging"

    log_format: Literal["auto", "json", "console"] = setting(
        "auto", help="log format (auto: console when stderr is a terminal, else JSON)"
    )
