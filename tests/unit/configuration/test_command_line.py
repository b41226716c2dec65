"""The one settings mechanism: flags, variables, secrets and their files, errors, --help."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Literal

import pytest
from pydantic import SecretStr

from configuration import CommandSettings, build_parser, load_settings, setting


class Group(CommandSettings):
    group_title: ClassVar[str] = "shared group"

    endpoint: str = setting("localhost:1", env="LANDMARK_EXAMPLE_ENDPOINT", help="where")
    password: SecretStr = setting(SecretStr(""), help="a secret")


class Example(Group):
    count: int = setting(3, ge=1, help="how many")
    mode: Literal["fast", "slow"] = setting("fast", help="which way")
    verbose: bool = setting(False, help="talk more")
    output: Path | None = setting(None, help="where to write")
    inputs: tuple[Path, ...] = setting(positional=True, nargs="+", help="files")


@pytest.fixture(autouse=True)
def no_landmark_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("LANDMARK_"):
            monkeypatch.delenv(name)


def load(*argv: str) -> Example:
    return load_settings(Example, ["in.jpg", *argv], prog="example", description="An example.")


def help_text() -> str:
    return " ".join(build_parser(Example, prog="example", description="d").format_help().split())


def test_flag_over_variable_over_default(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load().count == 3
    monkeypatch.setenv("LANDMARK_COUNT", "5")
    assert load().count == 5
    assert load("--count", "7").count == 7


def test_declared_variable_name_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_EXAMPLE_ENDPOINT", "broker:9")
    assert load().endpoint == "broker:9"


def test_switch_from_variable_can_be_turned_off_by_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_VERBOSE", "true")
    assert load().verbose is True
    assert load("--no-verbose").verbose is False


def test_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_COUNT", "")
    assert load().count == 3


def test_positional_arguments_have_no_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_INPUTS", '["x.jpg"]')
    assert load().inputs == (Path("in.jpg"),)


def test_literal_choices_are_enforced_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        load("--mode", "medium")
    assert "invalid choice" in capsys.readouterr().err


def test_constraint_violation_names_flag_and_variable_not_value(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load("--count", "-41235")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--count / LANDMARK_COUNT" in err
    assert "41235" not in err


def test_secret_comes_from_its_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")
    monkeypatch.setenv("LANDMARK_PASSWORD_FILE", str(tmp_path / "pw"))
    assert load().password.get_secret_value() == "hunter2"


def test_secret_and_its_file_together_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text("hunter2")
    monkeypatch.setenv("LANDMARK_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("LANDMARK_PASSWORD", "other-secret")
    with pytest.raises(SystemExit):
        load()
    err = capsys.readouterr().err
    assert "LANDMARK_PASSWORD or LANDMARK_PASSWORD_FILE, not both" in err
    assert "hunter2" not in err and "other-secret" not in err


def test_unreadable_secret_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LANDMARK_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SystemExit):
        load()
    assert "LANDMARK_PASSWORD_FILE: cannot read" in capsys.readouterr().err


def test_secret_is_hidden_in_repr_and_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_PASSWORD", "hunter2")
    settings = load()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert "hunter2" not in help_text()
    assert "[env: LANDMARK_PASSWORD or LANDMARK_PASSWORD_FILE] (secret: never shown)" in help_text()


def test_help_shows_the_class_default_not_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_COUNT", "99")
    text = help_text()
    assert "[env: LANDMARK_COUNT] (default: 3)" in text
    assert "99" not in text


def test_help_groups_the_shared_group_under_its_title() -> None:
    text = build_parser(Example, prog="example", description="d").format_help()
    group_part = text.split("shared group:")[1]
    assert "--endpoint" in group_part and "--count" not in group_part


def test_settings_are_frozen() -> None:
    settings = load()
    with pytest.raises(ValueError, match="frozen"):
        settings.count = 4  # type: ignore[misc]


def test_unknown_settings_are_refused_in_code() -> None:
    with pytest.raises(ValueError, match="Extra inputs"):
        Example(inputs=(Path("a"),), colour="red")  # type: ignore[call-arg]


class Renamed(CommandSettings):
    action: Literal["go", "stop"] = setting(positional=True, help="what to do")
    colour: str = setting("red", aliases=("--color",), help="a flag with an older name")
    keep: bool = setting(True, off_flag="--discard", help="keep it")
    no_cache: bool = setting(False, help="a switch whose flag already says no")


def load_renamed(*argv: str) -> Renamed:
    return load_settings(Renamed, ["go", *argv], prog="renamed", description="d")


def test_an_alias_flag_sets_the_same_setting() -> None:
    assert load_renamed("--color", "blue").colour == "blue"
    assert load_renamed("--colour", "green").colour == "green"
    assert (
        "--colour COLOUR, --color COLOUR"
        in build_parser(Renamed, prog="r", description="d").format_help()
    )


def test_an_off_flag_turns_a_switch_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANDMARK_KEEP", "true")
    assert load_renamed().keep is True
    assert load_renamed("--discard").keep is False
    assert load_renamed("--no-keep").keep is False


def test_a_switch_named_no_is_not_negated_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_renamed().no_cache is False
    assert load_renamed("--no-cache").no_cache is True
    monkeypatch.setenv("LANDMARK_NO_CACHE", "1")
    assert load_renamed().no_cache is True
    assert "--no-no-cache" not in build_parser(Renamed, prog="r", description="d").format_help()


def test_positional_choices_are_enforced_by_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        load_settings(Renamed, ["jump"], prog="renamed", description="d")
    assert "invalid choice" in capsys.readouterr().err


class Overriding(Group):
    """A command that gives a group's setting another default."""

    endpoint: str = setting("elsewhere:2", env="LANDMARK_EXAMPLE_ENDPOINT", help="where")


def test_a_group_setting_declared_again_keeps_its_group_and_takes_the_new_default() -> None:
    assert load_settings(Overriding, [], prog="o", description="d").endpoint == "elsewhere:2"
    text = build_parser(Overriding, prog="o", description="d").format_help()
    assert "--endpoint" in text.split("shared group:")[1]
    assert "(default: elsewhere:2)" in " ".join(text.split())
