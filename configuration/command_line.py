"""The one command-line mechanism: ``--help`` and flags generated from a settings class.

``--help`` shows each flag's environment variable (``[env: LANDMARK_…]``) and the class's own
default, never a value read from the environment, so no secret can appear there. Errors name the
flag and the variable, never the rejected value.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence
from enum import Enum
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from configuration.base import (
    SECRET_FILE_SUFFIX,
    CommandSettings,
    env_name,
    is_positional,
    is_secret,
)

S = TypeVar("S", bound=CommandSettings)


def _extra(field: FieldInfo) -> dict[str, object]:
    """What :func:`configuration.base.setting` stored about the flag."""
    return dict(field.json_schema_extra) if isinstance(field.json_schema_extra, dict) else {}


def flag_of(field_name: str, field: FieldInfo) -> str:
    """The flag of a field: its declared flag, else ``--field-name``."""
    declared = _extra(field).get("flag")
    return str(declared) if declared else "--" + field_name.replace("_", "-")


def _aliases(field: FieldInfo) -> list[str]:
    aliases = _extra(field).get("aliases")
    return [str(alias) for alias in aliases] if isinstance(aliases, list) else []


def _nargs(field: FieldInfo) -> str | None:
    nargs = _extra(field).get("nargs")
    return nargs if isinstance(nargs, str) else None


def _choices(annotation: Any) -> tuple[str, ...] | None:
    """The allowed values of a ``Literal`` (or optional ``Literal``) or enum annotation."""
    if get_origin(annotation) is Literal:
        return tuple(str(a) for a in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(str(member.value) for member in annotation)
    for arg in get_args(annotation):
        found = _choices(arg)
        if found:
            return found
    return None


def _is_switch(annotation: Any) -> bool:
    return annotation is bool or (
        bool in get_args(annotation) and type(None) in get_args(annotation)
    )


def _default_text(field: FieldInfo) -> str:
    if is_secret(field):
        return " (secret: never shown)"
    if field.is_required():
        return " (required)"
    if field.default_factory is not None or field.default is None:
        return ""
    default = field.default
    if isinstance(default, Enum):
        default = default.value
    if isinstance(default, frozenset | tuple | list):
        default = ",".join(sorted(str(d) for d in default)) or "none"
    return f" (default: {default})"


def _owner_titles(cls: type[CommandSettings]) -> dict[str, str | None]:
    """Field name → the ``--help`` section of the group that declares it (None: the command's).

    A command that declares a group's field again (to change its default) leaves it in the group.
    """
    titles: dict[str, str | None] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, CommandSettings)):
            continue
        title = None if klass is cls else klass.__dict__.get("group_title")
        for name in inspect.get_annotations(klass):
            if name in cls.model_fields:
                titles.setdefault(name, title)
    return titles


def build_parser(
    cls: type[CommandSettings], *, prog: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of ``cls``; parsed values are strings.

    Flags the user does not give are absent from the parsed namespace (``SUPPRESS``), so the
    environment and the defaults are applied by the settings class, not by argparse.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        argument_default=argparse.SUPPRESS,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    titles = _owner_titles(cls)
    for name, field in cls.model_fields.items():
        title = titles.get(name)
        target = parser if title is None else groups.get(title)
        if target is None and title is not None:
            target = groups[title] = parser.add_argument_group(title)
        assert target is not None
        _add_flag(target, cls, name, field)
    return parser


def _add_flag(
    target: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type[CommandSettings],
    name: str,
    field: FieldInfo,
) -> None:
    text = (field.description or "").replace("%", "%%")
    if is_positional(field):
        target.add_argument(
            name, nargs=_nargs(field), choices=_choices(field.annotation), help=text
        )
        return
    variable = env_name(cls, name)
    env_text = f" [env: {variable}"
    env_text += f" or {variable}{SECRET_FILE_SUFFIX}]" if is_secret(field) else "]"
    help_text = text + env_text + _default_text(field)
    flags = [flag_of(name, field), *_aliases(field)]
    if _is_switch(field.annotation):
        _add_switch(target, name, field, flags, help_text)
        return
    target.add_argument(
        *flags,
        dest=name,
        nargs=_nargs(field),
        choices=_choices(field.annotation),
        metavar=name.upper() if _nargs(field) else None,
        help=help_text,
    )


def _add_switch(
    target: argparse.ArgumentParser | argparse._ArgumentGroup,
    name: str,
    field: FieldInfo,
    flags: list[str],
    help_text: str,
) -> None:
    """``--x`` / ``--no-x``; a flag already named ``--no-…`` only turns its switch on."""
    if flags[0].startswith("--no-"):
        target.add_argument(*flags, dest=name, action="store_const", const=True, help=help_text)
    else:
        target.add_argument(
            *flags, dest=name, action=argparse.BooleanOptionalAction, help=help_text
        )
    off_flag = _extra(field).get("off_flag")
    if off_flag:
        target.add_argument(
            str(off_flag),
            dest=name,
            action="store_const",
            const=False,
            help=f"same as --no-{flags[0].removeprefix('--')}",
        )


def describe_errors(cls: type[CommandSettings], error: ValidationError) -> list[str]:
    """One line a problem, naming the flag and the variable; never the value given."""
    by_alias = {env_name(cls, name): name for name in cls.model_fields}
    lines = []
    for problem in error.errors(include_input=False, include_url=False):
        message = str(problem["msg"]).removeprefix("Value error, ")
        location = problem.get("loc") or ()
        key = str(location[0]) if location else ""
        name = by_alias.get(key, key)
        field = cls.model_fields.get(name)
        if field is None:
            lines.append(f"{key}: {message}" if key else message)
            continue
        if problem["type"] == "missing":
            message = "required (give the flag or set the variable)"
        where = name if is_positional(field) else f"{flag_of(name, field)} / {env_name(cls, name)}"
        lines.append(f"{where}: {message}")
    return lines


def load_settings(
    cls: type[S],
    argv: Sequence[str] | None = None,
    *,
    prog: str,
    description: str,
    epilog: str | None = None,
) -> S:
    """Parse ``argv`` and the environment into a frozen ``cls``; exit 2 with a clear message.

    Args:
        cls: The command's settings class.
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The command's name, for ``--help`` and errors.
        description: The command's one-paragraph description.
        epilog: Text after the flags in ``--help``.

    Returns:
        The settings.
    """
    parser = build_parser(cls, prog=prog, description=description, epilog=epilog)
    given = vars(parser.parse_args(list(sys.argv[1:] if argv is None else argv)))
    try:
        return cls(**given)
    except ValidationError as error:
        parser.error("; ".join(describe_errors(cls, error)))
    except (SettingsError, ValueError) as error:
        # Raised by a settings source (an unreadable *_FILE, a malformed variable): the message
        # names the variable; pydantic-settings' own never quote the value.
        parser.error(str(error))
