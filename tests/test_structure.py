"""The code's shape: no import cycle in pipeline/ (lazy imports inside
functions count too)."""
import ast

import pytest

from .conftest import REPO

PIPELINE = REPO / "pipeline"


def imports_of(path) -> set[str]:
    """The xlembed modules (pipeline/ file stems) that a module imports, anywhere in it."""
    modules = {p.stem for p in PIPELINE.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").startswith("xlembed"):
                base = (node.module or "").removeprefix("xlembed").lstrip(".")
                if base:
                    found.add(base.split(".")[0])
                else:  # from . import x
                    found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("xlembed."))
    return (found & modules) - {"__init__"}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node, [node])):
            return cycle
    return None


def test_pipeline_has_no_import_cycle():
    graph = {p.stem: imports_of(p) for p in PIPELINE.glob("*.py") if p.stem != "__init__"}
    assert graph["run"], "the walk found no imports at all"
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def long_functions(folders=("pipeline", "cli"), limit: int = 60) -> list[str]:
    """Functions (methods and nested ones too) over `limit` lines, decorators and docstring included."""
    found = []
    for folder in folders:
        for path in sorted((REPO / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                    if node.end_lineno - start + 1 > limit:
                        lines = node.end_lineno - start + 1
                        found.append(f"{folder}/{path.name}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_library_function_is_over_60_lines():
    assert long_functions(limit=1), "the walk found no functions at all"
    assert long_functions() == []


def test_option_selectors_are_checked_against_the_declared_fields():
    from xlembed.config import select_fields

    assert [f.name for _, f in select_fields("encode.model", "executor.ray_address")] == ["model", "ray_address"]
    with pytest.raises(ValueError, match="declares no option 'no_such'"):
        select_fields("align.no_such")
    with pytest.raises(ValueError, match="no table"):
        select_fields("nowhere.model")


def test_a_single_stage_from_python_gets_the_checks_of_the_cli(tmp_path):
    from xlembed import Config, XlembedError, run_one
    from xlembed.io import WorkLock
    from xlembed.layout import WorkDir

    config = Config()
    config.executor.executor = "ray"
    with pytest.raises(XlembedError, match="executor.executor ray: project runs on Ray only together"):
        run_one("project", config, tmp_path / "work")
    assert not (tmp_path / "work").exists()  # refused before the work directory was touched
    with pytest.raises(XlembedError, match="project.min_count must be at least 1"):
        run_one("project", Config().set(min_count=0), tmp_path / "work")
    with WorkLock(WorkDir(tmp_path / "work").lock, "another xlembed"):
        with pytest.raises(XlembedError, match="in use by pid .*another xlembed"):
            run_one("project", Config(), tmp_path / "work")
