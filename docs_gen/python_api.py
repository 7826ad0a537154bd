"""reference/python-api.md: the public names of ``agent.secrets`` (its ``__all__``), rendered from their
docstrings by mkdocstrings when the site is built."""

from __future__ import annotations

import agent.secrets
from docs_gen.markdown import page

SOURCE = "`agent.secrets.__all__` (the text is rendered from the docstrings by mkdocstrings)"
MODULE = "agent.secrets"


def names() -> list[str]:
    """The names the page documents: the package's ``__all__``, in its order."""
    return list(agent.secrets.__all__)


def render() -> str:
    """The whole page: an introduction and one mkdocstrings block with an explicit member list."""
    members = "\n".join(f"        - {name}" for name in names())
    block = f"""\
::: {MODULE}
    options:
      show_root_heading: false
      show_source: false
      docstring_style: google
      members:
{members}"""
    intro = (
        "The Python API: `from agent.secrets import SecretManager, LocalSecretManager, SecretType`. "
        "Every public name of the package (`agent.secrets.__all__`), with its signature and docstring. "
        "The guide is [Python API](../python-api.md)."
    )
    return page("Python API reference", SOURCE, intro, block)
