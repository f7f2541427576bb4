"""The import structure the layering promises, measured by `tools/import_structure.py` (ast only)."""

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_structure", ROOT / "tools" / "import_structure.py")
structure = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(structure)


def test_no_package_back_arrows_and_no_subpackage_cycles():
    m = structure.measure(ROOT)
    assert m["package_back_arrows"] == []
    assert m["subpackage_back_arrows"] == []
    # the base layer imports no other project package
    assert not [a for a in m["package_arrows"] if a.startswith("medbase ->")]


def test_every_in_function_project_import_says_why():
    """Project imports stay at module top; the few left inside a function (a slow optional
    dependency behind them, or one backend of several) carry a comment saying why."""
    unexplained = []
    for mod, path in structure.modules(ROOT):
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and not node.level and \
                        (node.module or "").split(".")[0] in structure.PACKAGES:
                    if "#" not in lines[node.end_lineno - 1]:
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert unexplained == []


def test_the_measure_sees_a_planted_cycle(tmp_path):
    """The cycle finder is not blind: two sub-packages importing each other are reported."""
    for pkg, other in (("a", "b"), ("b", "a")):
        d = tmp_path / "medtok" / pkg
        d.mkdir(parents=True)
        (d / "__init__.py").write_text("")
        (d / "m.py").write_text(f"from medtok.{other}.m import x\nx = 1\n")
    (tmp_path / "medtok" / "__init__.py").write_text("")
    (tmp_path / "medtok" / "f.py").write_text("def f():\n    from medtok.a.m import x\n    return x\n")
    m = structure.measure(tmp_path)
    assert m["subpackage_back_arrows"] == ["medtok.a -> medtok.b", "medtok.b -> medtok.a"]
    assert m["in_function_project_imports"] == 1


def test_no_script_shadows_a_package():
    """`python scripts/x.py` puts scripts/ first on sys.path: a script named like a project
    package (scripts/serve.py) would hide that package from every script beside it."""
    names = {p.stem for p in (ROOT / "scripts").glob("*.py")}
    assert not names & structure.PACKAGES
    assert not [p for p in (ROOT / "scripts").glob("*.py") if "sys.path" in p.read_text()]
