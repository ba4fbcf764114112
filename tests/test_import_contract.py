"""The layering rules of ../shared/ARCHITECTURE.md, read off the source (every import, lazy ones included).

- stad.models never imports stad.data, stad.engine or detect;
- detect never imports stad.models or stad.engine;
- the evaluator (stad.evaluation, multi_cap_mAP.py) never reaches torch, directly or through the
  project modules it imports;
- only detect/detector.py imports ultralytics;
- library packages never import applications (the demos, the report, the video visualiser, the
  demo tracker: stad.apps, and the aliases stad.demo / stad.demo_pipeline / stad.report_demo);
- no library module of stad imports detect (detect may use stad's stage-neutral modules: no circle).
"""
from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the applications (stad/apps/: demo, pipeline, report, video visualiser, demo tracker) and the CLI aliases
# that keep their old names (`python -m stad.demo` etc.: modules that only call the app's main)
APPLICATIONS = ("stad.apps", "stad.demo", "stad.demo_pipeline", "stad.report_demo", "stad.export", "stad.stream",
                "tools")
STAD_LIBRARY = ("stad.data", "stad.models", "stad.engine", "stad.evaluation", "stad.config", "stad.structures",
                "stad.io_utils")
LIBRARY = STAD_LIBRARY + ("detect",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@lru_cache(maxsize=None)
def _modules() -> dict[str, Path]:
    files = [p for pkg in ("stad", "detect", "tools") for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "multi_cap_mAP.py", ROOT / "main.py"]
    return {_module_name(p): p for p in files if p.is_file()}


@lru_cache(maxsize=None)
def imports_of(module: str) -> frozenset[str]:
    """Absolute names every import statement of ``module`` names (relative imports resolved)."""
    path = _modules()[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import submodule`
    return frozenset(found)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _project_targets(module: str) -> set[str]:
    """Project modules that ``module`` imports (a package import counts as its ``__init__``)."""
    known = _modules()
    return {name for name in imports_of(module) if name in known}


def _reachable(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_project_targets(current))
        parent = current.rpartition(".")[0]  # importing a.b.c runs a/__init__ and a/b/__init__
        while parent:
            if parent in _modules():
                todo.append(parent)
            parent = parent.rpartition(".")[0]
    return seen


def _violations(sources: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} imports {name}" for module in _modules() if _within(module, sources)
                  for name in imports_of(module) if _within(name, forbidden))


def test_the_walker_sees_lazy_and_relative_imports():
    assert "detect.detector" in imports_of("detect.proposals")  # imported inside main()
    assert "stad.models.heads.acar" in imports_of("stad.models.heads")


@pytest.mark.parametrize("sources, forbidden", [
    (("stad.models",), ("stad.data", "stad.engine", "detect")),
    (("detect",), ("stad.models", "stad.engine")),
    (LIBRARY, APPLICATIONS),
    (STAD_LIBRARY, ("detect",)),
])
def test_layering(sources, forbidden):
    assert _violations(sources, forbidden) == []


def test_only_detect_detector_imports_ultralytics():
    users = sorted(m for m in _modules() if any(_within(n, ("ultralytics",)) for n in imports_of(m)))
    assert users == ["detect.detector"]


@pytest.mark.parametrize("entry", ["stad.evaluation", "multi_cap_mAP"])
def test_the_evaluator_never_reaches_torch(entry):
    reached = _reachable(entry) | {m for m in _modules() if _within(m, ("stad.evaluation",))}
    offenders = sorted(f"{m} imports {n}" for m in reached for n in imports_of(m) if _within(n, ("torch",)))
    assert offenders == []


@pytest.mark.parametrize("alias, app", [("stad.demo", "stad.apps.demo"), ("stad.demo_pipeline", "stad.apps.demo_pipeline"),
                                        ("stad.report_demo", "stad.apps.report_demo"),
                                        ("stad.export", "stad.apps.export"), ("stad.stream", "stad.apps.stream")])
def test_cli_aliases_only_call_the_app(alias, app):
    assert imports_of(alias) == frozenset({"sys", app, f"{app}.main"})
