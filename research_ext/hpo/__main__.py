"""``python -m research_ext.hpo ...``: the same as ``research-ext tune ...``."""

from research_ext.hpo._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
