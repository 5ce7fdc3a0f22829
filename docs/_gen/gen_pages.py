"""mkdocs-gen-files script: write the generated pages (see reference.py) into the build."""

import logging
import pathlib
import sys

import mkdocs_gen_files

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import reference  # noqa: E402

log = logging.getLogger("mkdocs.plugins.research_ext")
ROOT = reference.ROOT

with mkdocs_gen_files.open("tuning/study-file.md", "w") as f:
    f.write(reference.study_file_reference())

for module in reference.PUBLIC_MODULES:
    page = module.removeprefix("research_ext.")
    with mkdocs_gen_files.open(f"api/{page}.md", "w") as f:
        f.write(reference.api_page(module))

import research_ext.errors as errors  # noqa: E402

with mkdocs_gen_files.open("errors/index.md", "w") as f:
    f.write(reference.errors_index())
for name in errors.__all__:
    with mkdocs_gen_files.open(f"errors/{name}.md", "w") as f:
        f.write(reference.error_page(name))

with mkdocs_gen_files.open("changelog.md", "w") as f:
    f.write((ROOT / "CHANGELOG.md").read_text(encoding="utf-8"))

cache = ROOT / "build" / "docs-notebooks"
for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
    with mkdocs_gen_files.open(f"notebooks/{path.name}", "wb") as f:
        f.write(reference.executed_notebook(path, cache, log.info))
