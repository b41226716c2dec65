"""How every command is configured: settings classes, shared groups, flags and variables.

One mechanism for all commands (``landmark-worker``, ``landmark-train``, ``landmark-publish`` …):
a frozen pydantic-settings class per command, composed of the shared groups defined here, turned
into flags by :func:`configuration.command_line.load_settings`. Depends on pydantic-settings and the contracts in ``schemas`` only,
so the client tools use it without TensorFlow.
"""

from configuration.base import CommandSettings, setting
from configuration.command_line import build_parser, load_settings

__all__ = ["CommandSettings", "build_parser", "load_settings", "setting"]
