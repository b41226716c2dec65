"""Settings classes: frozen pydantic-settings models whose fields are also command-line flags.

Every command's settings class derives from :class:`CommandSettings` and composes the shared
groups (:mod:`configuration.kafka`, :mod:`configuration.milvus`, :mod:`configuration.log_settings`)
by inheritance, so a group's fields, flags and environment variables are defined once.

A field is declared with :func:`setting`: its help text, its environment variable (``LANDMARK_`` +
the field name in capitals unless named), its flag (``--field-name`` unless named). Values come,
highest first, from the command line, the environment, ``<VARIABLE>_FILE`` for secrets (the file's
content, as container platforms mount secrets), then the default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, get_args

from pydantic import Field, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "LANDMARK_"
#: Suffix of the variable that names a file holding a secret (``LANDMARK_MILVUS_TOKEN_FILE``).
SECRET_FILE_SUFFIX = "_FILE"


def setting(
    default: Any = ...,
    *,
    help: str,
    env: str | None = None,
    flag: str | None = None,
    positional: bool = False,
    nargs: str | None = None,
    aliases: tuple[str, ...] = (),
    off_flag: str | None = None,
    **constraints: Any,
) -> Any:
    """Declare a settings field that is also a flag.

    Args:
        default: The default value; ``...`` (the default) makes the setting required.
        help: One line for ``--help``.
        env: The environment variable when it is not ``LANDMARK_<FIELD_NAME>``.
        flag: The flag when it is not ``--field-name``.
        positional: A positional argument (no flag, no environment variable).
        nargs: argparse ``nargs`` for list-valued settings.
        aliases: Other flags for the same setting (an old name kept working).
        off_flag: For a switch, one more flag that turns it off (``--drop-previous`` for
            ``--no-keep-previous``).
        **constraints: pydantic constraints (``ge``, ``gt``, ``default_factory`` …).

    Returns:
        A pydantic ``FieldInfo``.
    """
    extra: dict[str, Any] = {
        "flag": flag,
        "positional": positional,
        "nargs": nargs,
        "aliases": list(aliases),
        "off_flag": off_flag,
    }
    if "default_factory" not in constraints:
        constraints["default"] = default
    return Field(description=help, validation_alias=env, json_schema_extra=extra, **constraints)


def split_commas(value: object) -> object:
    """``BeforeValidator`` for list settings: ``"a, b,,c"`` → ``("a", "b", "c")``.

    Use with ``pydantic_settings.NoDecode`` so that a variable is split, not read as JSON.
    """
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def none_from_text(value: object) -> object:
    """``BeforeValidator`` for optional settings: ``""`` or ``"none"`` (any case) → ``None``."""
    if isinstance(value, str) and value.strip().lower() in {"", "none"}:
        return None
    return value


def env_name(cls: type[BaseSettings], name: str) -> str:
    """The environment variable of field ``name`` of settings class ``cls``."""
    alias = cls.model_fields[name].validation_alias
    if isinstance(alias, str):
        return alias
    prefix = str(cls.model_config.get("env_prefix", ENV_PREFIX))
    return prefix + name.upper()


def is_secret(field: FieldInfo) -> bool:
    """Whether a field holds a secret (``SecretStr``, optional or not)."""
    annotation = field.annotation
    return annotation is SecretStr or SecretStr in get_args(annotation)


def is_positional(field: FieldInfo) -> bool:
    """Whether a field is a positional argument (read from the command line only)."""
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("positional"))


class FlagEnvironmentSource(EnvSettingsSource):
    """The environment, for every field but positional arguments."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """As pydantic-settings does, except that positional arguments have no variable."""
        if is_positional(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class SecretFileSource(PydanticBaseSettingsSource):
    """Reads each secret from the file named by ``<VARIABLE>_FILE``.

    Raises:
        ValueError: both the variable and its ``_FILE`` twin are set, or the file cannot be read
            (the message names the variable and the path, never the content).
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Not used: :meth:`__call__` reads all secrets at once."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        cls = self.settings_cls
        for name, field in cls.model_fields.items():
            if not is_secret(field):
                continue
            variable = env_name(cls, name)
            path = os.environ.get(variable + SECRET_FILE_SUFFIX, "")
            if not path:
                continue
            if os.environ.get(variable, ""):
                raise ValueError(f"set {variable} or {variable}{SECRET_FILE_SUFFIX}, not both")
            try:
                content = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"{variable}{SECRET_FILE_SUFFIX}: cannot read {path}: {type(error).__name__}"
                ) from None
            values[name] = content.rstrip("\r\n")
        return values


class CommandSettings(BaseSettings):
    """Base of every command's settings: frozen, no unknown fields, ``LANDMARK_`` variables.

    ``group_title`` names the ``--help`` section of the fields a class defines itself.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        populate_by_name=True,
        hide_input_in_errors=True,
    )
    group_title: ClassVar[str] = "options"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Command line (passed as init values), environment, ``*_FILE`` secrets; no dotenv."""
        return init_settings, FlagEnvironmentSource(settings_cls), SecretFileSource(settings_cls)
