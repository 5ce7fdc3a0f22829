"""Extract the fenced code blocks of a Markdown page and run them the way a reader would.

Conventions (docs/index.md states them for writers):

* A ```` ```python ```` block is executed. All the blocks of one page run in order in one
  namespace, in a fresh interpreter, in an empty temporary directory holding a copy of
  ``examples/`` (so ``examples/dp_digits.toml`` resolves and nothing is written into the source
  tree).
* A block with a ``title="FILE"`` attribute (```` ```python title="objective.py" ````, or
  ``toml``) is a file the reader saves: it is written to ``FILE`` in that directory, not run.
* A ```` ```toml ```` block holding a ``[study]`` table is validated as a study file (the
  objective is not imported); one titled ``broken_*.toml`` must be refused (``ConfigError``).
* A ```` ```bash ```` block is checked, not run: each ``make TARGET`` must be a Makefile target,
  each ``research-ext ...``, ``optuna ...``, ``optuna-dashboard ...`` or ``python SCRIPT ...``
  command must exist and accept every ``--flag`` written (read off its ``--help``).
* ``text``, ``console`` and unlabelled blocks are output, shown only.
"""

import dataclasses
import re

_FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w+-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
    re.M | re.S,
)
_TITLE = re.compile(r'title="([^"]+)"')


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: its language, optional file title, text and first line number."""

    lang: str
    title: str | None
    body: str
    line: int


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, in order (indented fences included)."""
    out = []
    for match in _FENCE.finditer(text):
        indent = match.group("indent")
        body = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in match.group("body").splitlines(keepends=True)
        )
        title = _TITLE.search(match.group("attrs"))
        out.append(
            Block(
                lang=match.group("lang").lower(),
                title=title.group(1) if title else None,
                body=body,
                line=text.count("\n", 0, match.start()) + 1,
            )
        )
    return out


def script(page_blocks: list[Block], source: str) -> str:
    """A Python script that writes the page's files and runs its Python blocks in order."""
    lines = [
        "import pathlib, sys, time",
        "sys.dont_write_bytecode = True",
        "_t0 = time.perf_counter()",
    ]
    for block in page_blocks:
        if block.title is not None:
            lines.append(
                f"pathlib.Path({block.title!r}).write_text({block.body!r}, encoding='utf-8')"
            )
        elif block.lang in ("python", "py"):
            lines.append(
                f"print(f'--- {source}, line {block.line} "
                "({time.perf_counter() - _t0:.1f} s so far)', flush=True)"
            )
            lines.append(
                f"exec(compile({block.body!r}, {f'{source}:{block.line}'!r}, 'exec'), globals())"
            )
    return "\n".join(lines) + "\n"


def shell_commands(body: str) -> list[list[str]]:
    """The commands of a bash block, one argv each (comments, continuations and env stripped)."""
    import shlex

    joined = re.sub(r"\\\n", " ", body)
    commands = []
    for raw in joined.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        for part in re.split(r"\s*(?:&&|\|\||;)\s*", line):
            argv = shlex.split(part)
            while argv and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", argv[0]):
                argv = argv[1:]  # VAR=value prefixes
            if argv and argv[0] == "time":
                argv = argv[1:]
            if argv:
                commands.append(argv)
    return commands
