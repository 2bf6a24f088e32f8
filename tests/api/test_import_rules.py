"""The import rules of docs/architecture.md ("Import rules"): the API never imports torch,
diffusers or the worker package (proven with them unimportable), the engine never imports the
queue, `schemas` and `farm` import only what they may, and no module import cycle anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("api", "cli", "farm", "schemas", "worker")


def _run_python(code: str) -> None:
    """Run `code` in a fresh interpreter (nothing imported yet) and expect it to print ok."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_the_api_builds_and_serves_with_torch_diffusers_and_worker_unimportable(
    redis_url, tmp_path
):
    code = textwrap.dedent(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "diffusers", "transformers", "worker"):
                    raise ImportError(f"{{name}} must not be imported by the API")
        sys.meta_path.insert(0, Block())
        from api.app import create_app
        from schemas import Settings
        app = create_app(Settings(redis_url={redis_url!r}, data_dir={str(tmp_path)!r},
                                  default_model="tiny-random"))
        client = app.test_client()
        assert client.get("/v1/openapi.json").status_code == 200
        assert client.get("/v1/models").status_code == 200
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "worker")]
        assert not bad, bad
        print("ok")
        """
    )
    _run_python(code)


def test_the_render_engine_never_imports_celery_redis_or_boto3():
    code = textwrap.dedent(
        """
        import sys
        import worker.render
        bad = [m for m in sys.modules if m.split(".")[0] in ("celery", "redis", "boto3", "flask")]
        assert not bad, bad
        print("ok")
        """
    )
    _run_python(code)


# --- static rules: every import statement, the deferred ones inside functions included ------

SCHEMAS_MAY_IMPORT = {"numpy", "PIL", "pydantic", "pydantic_settings"}  # and the standard library
FARM_NEVER_IMPORTS = {"api", "cli", "worker", "torch", "diffusers", "transformers", "flask"}


def _modules(root: Path, packages) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__) for every module of `packages`."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_init = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_init else parts)] = (path, is_init)
    return found


def _imports(name: str, path: Path, is_init: bool, known) -> set[str]:
    """The modules `name` imports anywhere in its file, relative imports resolved: for
    `from m import x`, m.x when that is a module, else m."""
    package = name if is_init else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ""
            if node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
            module = ".".join(part for part in (base, node.module or "") if part)
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                out.add(sub if sub in known else module)
    return out


def import_graph(root: Path, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> every module it imports (any package, outside ones included)."""
    known = _modules(root, packages)
    return {
        name: _imports(name, path, is_init, known) - {name}
        for name, (path, is_init) in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle among the graph's own modules, as a path a -> b -> ... -> a."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph[node] & graph.keys()):
            if state.get(nxt) == "open":
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _breaking(graph, package: str, allowed) -> list[str]:
    """`module imports name` for each import of `package` whose top-level name `allowed` refuses."""
    return sorted(
        f"{module} imports {imported}"
        for module, imports in graph.items()
        if module.split(".")[0] == package
        for imported in imports
        if not allowed(imported.split(".")[0])
    )


def test_schemas_imports_nothing_of_the_project_and_only_its_listed_libraries():
    graph = import_graph(ROOT)
    may = SCHEMAS_MAY_IMPORT | set(sys.stdlib_module_names) | {"schemas"}
    assert _breaking(graph, "schemas", lambda top: top in may) == []


def test_farm_imports_schemas_of_the_project_and_never_torch_or_the_worker():
    graph = import_graph(ROOT)
    own = set(PACKAGES) - {"farm", "schemas"}
    never = FARM_NEVER_IMPORTS | own
    assert _breaking(graph, "farm", lambda top: top not in never) == []


def test_no_import_cycle_in_any_package_deferred_imports_included():
    cycle = find_cycle(import_graph(ROOT))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_closed_by_a_deferred_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def late():\n    from .a import thing\n    return thing\n")
    (package / "c.py").write_text("from pkg.a import b\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]
