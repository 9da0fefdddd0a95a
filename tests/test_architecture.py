"""Dependencies point one way: core's ML modules import no service code; nothing imports api or worker."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_core_ml_never_imports_service_code() -> None:
    forbidden = ("api", "worker", "core.store", "fastapi", "sqlalchemy", "celery", "redis")
    for path in files("core"):
        if "store" in path.relative_to(ROOT / "core").parts:
            continue
        bad = {name for name in imports_of(path) if name.split(".")[0] in forbidden or name.startswith("core.store")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_nothing_imports_api_or_worker() -> None:
    for package, forbidden in (("core", ("api", "worker")), ("api", ("worker",)), ("worker", ("api",))):
        for path in files(package):
            bad = {name for name in imports_of(path) if name.split(".")[0] in forbidden}
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
