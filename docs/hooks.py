"""MkDocs hook: serve the project's result figures from `results/` without copying them.

Pages link figures the way the README always did (`results/prefix_experiment/accuracy.png`);
this hook adds every image under the repository's `results/` folder to the site's files at
that same path, so `mkdocs build --strict` resolves those links on a fresh clone and nothing
is duplicated under `docs/`. `mkdocs serve` also watches `results/`.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

IMAGE_SUFFIXES = {".png", ".svg", ".jpg", ".jpeg", ".gif"}


def _results_dir(config) -> Path:
    return Path(config.config_file_path).resolve().parent / "results"


def on_files(files, config):
    results = _results_dir(config)
    root = results.parent
    for path in sorted(results.rglob("*")) if results.is_dir() else []:
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            uri = path.relative_to(root).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_serve(server, config, builder):
    results = _results_dir(config)
    if results.is_dir():
        server.watch(str(results))
    return server
