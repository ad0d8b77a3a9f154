"""Prompt templates, one file per role. `$name` placeholders (string.Template)."""

from importlib.resources import files
from string import Template


def text(name: str) -> str:
    """The template `prompts/<name>.txt` as written (name may hold a sub-folder: strategies/explore)."""
    return files(__name__).joinpath(f"{name}.txt").read_text()


def render(name: str, **values: object) -> str:
    return Template(text(name)).substitute({k: str(v) for k, v in values.items()})
