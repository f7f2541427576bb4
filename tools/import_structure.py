"""The project's import structure, measured from the code with `ast` (nothing is imported).

    python tools/import_structure.py          # the summary below, as text
    python tools/import_structure.py --json   # the same as JSON
    python tools/import_structure.py --root ../other-checkout   # another checkout (e.g. a commit before a refactor)

Reports, over the library packages (tests and scripts left out):
* package-level arrows (`qa -> medtok` when a module of `qa` imports one of `medtok`), and the
  back-arrows among them: arrows that lie on a cycle, or point up the declared layering;
* sub-package arrows inside each package (`ehr.tasks -> ehr.<root modules>`) and their cycles;
* the largest modules by line count;
* project imports made inside a function body (which hide the dependency graph), with those
  of optional heavy dependencies (`OPTIONAL`) counted apart.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# lower layers first: an arrow from a package to one later in this list points up (a back-arrow)
LAYERS = ["medbase", "medtok", "qa", "ehr", "llm_adapter", "serve"]
PACKAGES = set(LAYERS)
# optional or slow third-party modules that may stay imported inside functions
OPTIONAL = {"vllm", "scispacy", "spacy", "sentence_transformers", "transformers", "peft", "accelerate",
            "bitsandbytes", "torch_geometric", "matplotlib", "aces", "meds_reader", "meds_evaluation",
            "datasets", "uvicorn", "gguf", "sklearn", "mkdocs"}


def modules(root: Path = ROOT):
    for pkg in sorted(PACKAGES):
        base = root / pkg
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def _resolve(module: str, node: ast.ImportFrom, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path):
    """(target module, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out = []

    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            f = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_func) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(module, child, is_pkg)
                out.append((target, in_func))
            visit(child, f)

    visit(tree, False)
    return out


def _unit(module: str, packages: set[str]) -> str:
    """The unit an arrow inside a package starts or ends at: a sub-package (`ehr.tasks.stays` ->
    `ehr.tasks`), or a module at the package's root as itself (`ehr.tasks.guards`)."""
    parts = module.split(".")
    if len(parts) <= 2:
        return module
    return ".".join(parts[:2]) if ".".join(parts[:2]) in packages else module


def _cycle_edges(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Edges that lie on a directed cycle (both ends in one strongly connected component)."""
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)

    def reach(src):
        seen, stack = set(), [src]
        while stack:
            for n in graph[stack.pop()]:
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

    reaches = {n: reach(n) for n in {x for e in edges for x in e}}
    return {(a, b) for a, b in edges if a in reaches[b]}


def measure(root: Path = ROOT) -> dict:
    mods = dict(modules(root))
    subpackages = {m for m, p in mods.items() if p.name == "__init__.py" and m.count(".") == 1}
    pkg_edges, unit_edges = set(), set()
    in_func_project, in_func_optional = [], []
    sizes = {}
    for mod, path in mods.items():
        sizes[str(path.relative_to(root))] = len(path.read_text().splitlines())
        for target, in_func in imports_of(mod, path):
            top = target.split(".")[0]
            if in_func and top in PACKAGES:
                in_func_project.append(f"{mod} -> {target}")
            elif in_func and top in OPTIONAL:
                in_func_optional.append(f"{mod} -> {target}")
            if top not in PACKAGES:
                continue
            src_top = mod.split(".")[0]
            if top != src_top:
                pkg_edges.add((src_top, top))
            else:
                a, b = _unit(mod, subpackages), _unit(target, subpackages)
                if a != b:
                    unit_edges.add((a, b))
    up = {(a, b) for a, b in pkg_edges if LAYERS.index(b) > LAYERS.index(a)}
    pkg_back = sorted(_cycle_edges(pkg_edges) | up)
    unit_back = sorted(_cycle_edges(unit_edges))
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {
        "package_arrows": sorted(f"{a} -> {b}" for a, b in pkg_edges),
        "package_back_arrows": [f"{a} -> {b}" for a, b in pkg_back],
        "subpackage_arrows": len(unit_edges),
        "subpackage_back_arrows": [f"{a} -> {b}" for a, b in unit_back],
        "largest_modules": [{"path": p, "lines": n} for p, n in largest],
        "modules": len(mods),
        "in_function_project_imports": len(in_func_project),
        "in_function_project_import_list": sorted(in_func_project),
        "in_function_optional_imports": len(in_func_optional),
    }


def format_summary(m: dict) -> str:
    lines = [f"modules: {m['modules']}",
             f"package arrows ({len(m['package_arrows'])}): " + ", ".join(m["package_arrows"]),
             f"package back-arrows: {len(m['package_back_arrows'])} " + ", ".join(m["package_back_arrows"]),
             f"sub-package arrows: {m['subpackage_arrows']}; on a cycle: {len(m['subpackage_back_arrows'])} "
             + ", ".join(m["subpackage_back_arrows"]),
             "largest modules: " + ", ".join(f"{x['path']} ({x['lines']})" for x in m["largest_modules"]),
             f"project imports inside functions: {m['in_function_project_imports']}",
             f"optional-dependency imports inside functions: {m['in_function_optional_imports']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--list", action="store_true", help="also list the in-function project imports")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = ap.parse_args(argv)
    m = measure(args.root.resolve())
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        print(format_summary(m))
        if args.list:
            print("\n".join(m["in_function_project_import_list"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
