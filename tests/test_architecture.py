"""The layer picture cannot drift: import-linter's contract, every module in a layer, the
README's table read from the same contract, and a proof that the contract catches an upward
import."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _contract_layers() -> list[set[str]]:
    """The layers contract of pyproject.toml, top first: each a set of module names."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in contracts if c["type"] == "layers"]
    return [set(re.split(r"\s*[|:]\s*", layer.strip())) for layer in layers["layers"]]


def _readme_layers() -> list[set[str]]:
    """The modules column of the README's architecture table, top first."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("### Architecture", 1)[1].split("\n### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]
    return [set(re.findall(r"`([\w/]+?)/?`", row.split("|")[2])) for row in rows]


def _lint_imports(cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def test_import_contracts_are_kept():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " 0 broken" in result.stdout.split("Contracts:")[-1]


def test_every_module_sits_in_one_layer():
    layered = [m for layer in _contract_layers() for m in layer]
    assert len(layered) == len(set(layered)), "a module is in two layers"
    modules = {
        p.stem if p.suffix == ".py" else p.name
        for p in (REPO / "genre").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert modules == set(layered), (
        f"not in a layer: {sorted(modules - set(layered))}; "
        f"in a layer but absent: {sorted(set(layered) - modules)}"
    )


def test_readme_architecture_table_matches_the_contract():
    assert _readme_layers() == _contract_layers()


def test_contract_fails_on_an_upward_import(tmp_path):
    """A copy of the code with one upward import (settings → pipelines) breaks the layers."""
    for name in ("genre", "jobs"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    config = tmp_path / "genre" / "config.py"
    config.write_text(config.read_text(encoding="utf-8") + "\nimport genre.tuning  # noqa\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)}
    result = _lint_imports(tmp_path, env=env)
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert "genre.config is not allowed to import genre.tuning" in result.stdout


def test_no_genre_import_dodges_a_loop_inside_a_function():
    """Inside the library, imports of genre's own modules sit at the top of a file: heavy
    third-party imports (TensorFlow, Ray, MLflow) may wait inside a function, a genre module
    never needs to. (The jobs defer theirs so that a bad argument exits before Ray loads.)"""
    offenders = []
    for path in sorted((REPO / "genre").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"\s+(from genre[\w.]* import|import genre\b)", line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_no_private_name_is_imported_from_another_module():
    """A name with a leading underscore stays in its module (or its own subpackage, as the
    synthesiser's parts share theirs); what another module needs is public."""
    import ast

    offenders = []
    for path in sorted((REPO / "genre").rglob("*.py")) + sorted((REPO / "jobs").glob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.module):
                continue
            same_package = node.module.rsplit(".", 1)[0] == module.rsplit(".", 1)[0]
            if node.module.startswith("genre.synth") and same_package:
                continue
            private = [a.name for a in node.names if a.name.startswith("_")]
            if node.module.startswith(("genre", "jobs")) and private:
                offenders.append(f"{module} imports {private} from {node.module}")
    assert not offenders, "\n".join(offenders)
