"""Reading recipes: the bundled TOML files by name, recipe and config files by path."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from train.recipes.schema import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


def recipe_names() -> list[str]:
    """The bundled recipes, by name."""
    folder = resources.files("train") / "recipes"
    return sorted(item.name.removesuffix(".toml") for item in folder.iterdir() if item.name.endswith(".toml"))


def recipe_text(name_or_file: str) -> str:
    """The TOML text of a bundled recipe (by name) or of a recipe file (by path)."""
    if name_or_file in recipe_names():
        return (resources.files("train") / "recipes" / f"{name_or_file}.toml").read_text(encoding="utf-8")
    path = Path(name_or_file).expanduser()
    if path.suffix == ".toml" or path.is_file():
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read recipe {path}: {exc.strerror or exc}") from None
    raise ConfigError(
        f"unknown recipe {name_or_file!r}; known: {', '.join(recipe_names())}",
        hint="pass a bundled recipe's name or a .toml file (`upscale train --print-recipe NAME` shows one)",
    )


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None


def load_table(name_or_file: str) -> dict[str, Any]:
    """A recipe's raw table, before overrides and checks."""
    return parse_toml(recipe_text(name_or_file), name_or_file)


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    return parse_toml(text, str(path))
