"""The house's layering: imports run one way (no circle, lazy imports included) and leaf modules stay leaves."""
import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("roadmap", "analysis")


def _modules() -> dict[str, Path]:
    return {".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): path
            for package in PACKAGES for path in sorted((REPO / package).glob("*.py"))}


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
        graph[name] = {m for m in found if m in modules and m != name and m not in PACKAGES}
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
    assert graph["roadmap.depthwise"] and graph["roadmap.train"]  # the parser sees imports
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # and the check finds a circle
    assert _cycle(graph) is None, " → ".join(_cycle(graph))


def test_leaf_modules_import_no_project_module_but_leaves():
    graph = import_graph()
    leaves = {"roadmap.errors", "roadmap.files", "roadmap.devices", "roadmap.timing", "roadmap.depthwise_paths",
              "roadmap.cpu_allocator"}
    for leaf in leaves:
        assert graph[leaf] <= leaves, f"{leaf} imports {graph[leaf] - leaves}"


def test_validating_a_config_registers_no_op_and_builds_no_model():
    code = "import sys, roadmap.schema; print(sorted(m for m in sys.modules if m.startswith('roadmap')))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "roadmap.schema" in loaded
    assert "roadmap.depthwise'" not in loaded and "roadmap.model" not in loaded, loaded
