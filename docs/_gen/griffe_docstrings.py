"""A griffe extension: read the house docstrings the way the house writes them.

* ``Example:`` (the house's heading, singular) is parsed as griffe's ``Examples:`` section, so
  doctest lines render as highlighted Python sessions instead of running text.
* Outside code (backticks, doctest lines), ``a[i][j]``-style indexing is escaped so Markdown
  does not read it as a reference-style link that autorefs would try to resolve.
"""

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_CODE = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_line(line: str) -> str:
    if line.lstrip().startswith((">>>", "...")):
        return line
    parts = _CODE.split(line)
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("][", "]\\[")
    return "".join(parts)


class HouseDocstrings(griffe.Extension):
    """Rewrite each docstring before griffe parses it (see the module docstring)."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        """Called for every object griffe loads."""
        docstring = getattr(obj, "docstring", None)
        if docstring is None:
            return
        value = _EXAMPLE.sub(r"\1Examples:", docstring.value)
        docstring.value = "\n".join(_escape_line(line) for line in value.split("\n"))
