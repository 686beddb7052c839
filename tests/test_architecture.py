"""The house's plan (docs/architecture.md): packages in layers, imports running one way (no circle, lazy imports
included), the tools on top where nothing imports them, and no more than a dozen modules loose in ``roadmap/``."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("roadmap", "analysis")


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
            for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Every project module → the project modules it imports anywhere in its body (function-level imports too)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
        graph[name] = {m for m in found if m in modules and m != name and m not in PACKAGES and m != "roadmap." + name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_imports_have_no_circle():
    graph = import_graph()
    assert graph["roadmap.models.depthwise"] and graph["roadmap.run.train"]  # the parser sees imports
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # and the check finds a circle
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


# roadmap's packages from the bottom up: a module imports only its own package's and those below it
LAYERS = ("errors", "utils", "models", "config", "data", "run", "cluster")


def layer(module: str) -> int:
    """A module's place: its package's index in :data:`LAYERS`; the tools (the other modules directly in roadmap/)
    above every package, analysis above them."""
    parts = module.split(".")
    if parts[0] == "analysis":
        return len(LAYERS) + 1
    return LAYERS.index(parts[1]) if parts[1:] and parts[1] in LAYERS else len(LAYERS)


def tools(graph: dict[str, set[str]]) -> set[str]:
    return {m for m in graph if m.startswith("roadmap.") and layer(m) == len(LAYERS)}


def climbs(graph: dict[str, set[str]]) -> list[str]:
    """Every import that reaches up the layers, or from one tool to another."""
    return [f"{m} imports {n}" for m in sorted(graph) for n in sorted(graph[m])
            if layer(n) > layer(m) or (n in tools(graph) and m != n)]


def test_imports_run_down_the_layers_and_nothing_imports_a_tool():
    graph = import_graph()
    assert tools(graph) >= {"roadmap.explain", "roadmap.benchmark", "roadmap.sweep"}
    assert climbs({"roadmap.models.net": {"roadmap.run.train"}, "roadmap.run.train": set()})  # the check can fail
    assert climbs({"roadmap.run.train": {"roadmap.explain"}, "roadmap.explain": set()})
    assert climbs(graph) == []
    for lower in ("roadmap.models", "roadmap.data"):  # the models and the data never import the run
        assert not [m for m in graph if m.startswith(lower) for n in graph[m] if n.startswith("roadmap.run")]


def test_roadmap_holds_a_dozen_modules_and_each_package_says_what_it_holds():
    loose = sorted(p.name for p in (REPO / "roadmap").glob("*.py"))
    assert len(loose) <= 12, loose
    for package in (p for p in (REPO / "roadmap").iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text()))
        assert doc and len(doc) > 100, f"{package.name}/__init__.py says nothing of what it holds"


def test_leaf_modules_import_no_project_module_but_leaves():
    graph = import_graph()
    for module in (m for m in graph if layer(m) <= LAYERS.index("utils")):
        assert all(layer(n) <= LAYERS.index("utils") for n in graph[module]), f"{module} imports {graph[module]}"


def test_validating_a_config_registers_no_op_and_builds_no_model():
    code = "import sys, roadmap.config.schema; print(sorted(m for m in sys.modules if m.startswith('roadmap')))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "roadmap.config.schema" in loaded
    assert "roadmap.models.depthwise'" not in loaded and "roadmap.models.net" not in loaded, loaded
