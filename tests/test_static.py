"""Static checks in the test run: ruff over the repository, mypy over the packages, module docstrings.

Both read their settings from pyproject.toml (``[tool.ruff]``, ``[tool.mypy]``: strict on
cellgate.gateway and cellgate.agent). mypy does not follow setuptools' ``package-dir`` mapping
(gateway/ is ``cellgate.gateway``, ...), so it runs in a temporary tree laid out as the installed
package: ``cellgate/`` holds a symlink to each file of the real cellgate/ and one per mapped
subpackage to its real directory, all derived from ``[tool.setuptools] package-dir``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"

#: what ruff checks: every directory of Python code in the repository
RUFF_PATHS = ("gateway", "agent", "kernels", "cellgate", "notebook_ext", "tests", "benchmarks")


def package_dirs() -> dict[str, Path]:
    config = tomllib.loads(PYPROJECT.read_text())
    return {name: ROOT / path for name, path in config["tool"]["setuptools"]["package-dir"].items()}


def build_package_tree(dest: Path) -> list[str]:
    """Lay out the packages under ``dest`` as installed; return the top-level package names.

    A package that has a subpackage mapped elsewhere becomes a real directory with a symlink to each
    entry of its source directory; any other package is one symlink to its directory.
    """
    mapping = package_dirs()
    names = sorted(mapping, key=lambda name: name.count("."))
    mapped_children = {name: {other.rpartition(".")[2] for other in names if other.rpartition(".")[0] == name}
                       for name in names}
    for name in names:
        target = dest.joinpath(*name.split("."))
        if mapped_children[name]:
            target.mkdir(parents=True)
            for entry in sorted(mapping[name].iterdir()):
                if entry.name != "__pycache__" and entry.name not in mapped_children[name]:
                    (target / entry.name).symlink_to(entry)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(mapping[name], target_is_directory=True)
    return [name for name in names if "." not in name]


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("MYPYPATH", None)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_ruff_clean() -> None:
    result = run([sys.executable, "-m", "ruff", "check", "--no-cache", *RUFF_PATHS], cwd=ROOT)
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"


def test_mypy_clean(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    # -p cellgate takes in its subpackages (cellgate.gateway, ...); naming them too would make
    # mypy see each module twice
    command = [sys.executable, "-m", "mypy", "--config-file", str(PYPROJECT), "--cache-dir", str(tmp_path / "mypy-cache")]
    for name in build_package_tree(tree):
        command += ["-p", name]
    result = run(command, cwd=tree)
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}{result.stderr}"
    # every module of every package was checked, none skipped for a layout mypy did not follow
    expected = len({path.resolve() for directory in package_dirs().values() for path in directory.rglob("*.py")})
    checked = re.search(r"in (\d+) source files?\)?$", result.stdout.strip())
    assert checked is not None and int(checked.group(1)) == expected, result.stdout


def test_every_module_says_what_it_holds() -> None:
    """ruff's D100/D104 want a docstring in every module of the packages; here it must also say
    something: an opening line of several words, not a placeholder."""
    modules = sorted({path.resolve() for directory in package_dirs().values() for path in directory.rglob("*.py")})
    vague = []
    for path in modules:
        opening = (ast.get_docstring(ast.parse(path.read_text(), str(path))) or "").split("\n", 1)[0]
        if len(opening.split()) < 4:
            vague.append(f"{path.relative_to(ROOT)}: {opening!r}")
    assert not vague, "these modules do not open with what they hold:\n" + "\n".join(vague)
