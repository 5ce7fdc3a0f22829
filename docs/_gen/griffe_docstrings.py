"""A griffe extension: read the house docstrings the way the house writes them.

* ``Example:`` (the house's heading, singular) is parsed as griffe's ``Examples:`` section, so
  doctest lines render as highlighted Python sessions instead of running text.
* Outside code (backticks, doctest lines), ``a[i][j]``-style indexing is escaped so Markdown
  does not read it as a reference-style link that autorefs would try to resolve.
* The reStructuredText the docstrings borrow reads as code: ``:func:`name``` and the other
  roles become ``name`` in backticks, ``:math:`x``` the formula in backticks, and a
  ``.. math::`` block a fenced block (the site has no math renderer: it works offline).
* A decorated function's docstring is read from the imported function when a decorator
  composed it (the DCT/DST family splices its shared sections in at import time), so the page
  shows what ``help()`` shows.
"""

import importlib
import inspect
import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_CODE = re.compile(r"(``.*?``|`[^`]*`)")
_ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj|math|ref|term):`~?([^`]+)`")


def _role_as_code(match: re.Match[str]) -> str:
    """``:meth:`Class.step``` -> ``step``; ``:func:`name``` -> ``name``; math stays whole."""
    role, target = match.group(0).split(":")[1], match.group(1)
    return f"`{target.rsplit('.', 1)[-1] if role in ('meth', 'attr') else target}`"


def _math_blocks(text: str) -> str:
    """``.. math:: formula`` (with indented continuation lines) -> a fenced text block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = re.match(r"^(\s*)\.\. math::\s*(.*)$", lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.groups()
        body = [first] if first else []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() and not body or lines[i].startswith(indent + " ")
        ):
            if lines[i].strip():
                body.append(lines[i].strip())
            i += 1
        out += [f"{indent}```text", *(f"{indent}{line}" for line in body), f"{indent}```"]
    return "\n".join(out)


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
        if getattr(obj, "decorators", None):
            runtime = _runtime_doc(obj.path)
            if runtime is not None:
                docstring.value = runtime
        value = _EXAMPLE.sub(r"\1Examples:", docstring.value)
        value = _ROLE.sub(_role_as_code, value)
        value = _math_blocks(value)
        docstring.value = "\n".join(_escape_line(line) for line in value.split("\n"))


def _runtime_doc(path: str) -> str | None:
    """The docstring of the object at ``path`` after import (None if it cannot be imported)."""
    module_name, _, name = path.rpartition(".")
    try:
        return inspect.getdoc(getattr(importlib.import_module(module_name), name))
    except (ImportError, AttributeError):
        return None
