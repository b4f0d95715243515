"""kvae's layers, written down in .importlinter and checked by import-linter: a module imports
only from the layers below its own (imports inside functions count), no import circle
within a package or a layer, and evaluation is reached through its public face. The check
is also seen to fail, on copies of kvae with a planted import."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lint_imports(where):
    """Run the ``lint-imports`` console script in ``where`` on the kvae found there first."""
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which(
        "lint-imports"
    )
    assert exe, "lint-imports not found: pip install import-linter (the `test` extra)"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([where, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [exe, "--no-cache", "--no-logo"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert ", 0 broken." in result.stdout, result.stdout


@pytest.mark.parametrize(
    "module, planted, broken",
    [
        # An upward import, inside a function (it counts as much as one at the top).
        (
            "evaluation/iwae.py",
            "def _planted():\n    import kvae.cli  # noqa: F401\n",
            "kvae.evaluation is not allowed to import kvae.cli",
        ),
        # A circle inside one package: result is imported by summary (through loglik, ais).
        (
            "evaluation/result.py",
            "def _planted():\n    from kvae.evaluation import summary  # noqa: F401\n",
            "No cycles are allowed in kvae.evaluation",
        ),
        # A circle inside one layer: train imports callbacks.
        (
            "callbacks/annealing.py",
            "def _planted():\n    import kvae.train  # noqa: F401\n",
            "No cycles are allowed in kvae.",
        ),
        # A figure reading an evaluation module's insides instead of its public face.
        (
            "plots/grids.py",
            "from kvae.evaluation.quadrature import grid_points  # noqa: F401, E402\n",
            "Illegal imports of protected package kvae.evaluation.quadrature",
        ),
    ],
)
def test_a_planted_import_breaks_a_contract(tmp_path, module, planted, broken):
    """The check can fail: the same config on a copy of kvae with one import added."""
    shutil.copytree(
        os.path.join(ROOT, "kvae"),
        tmp_path / "kvae",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(os.path.join(ROOT, ".importlinter"), tmp_path / ".importlinter")
    assert _lint_imports(str(tmp_path)).returncode == 0  # the copy itself is clean
    with open(tmp_path / "kvae" / module, "a", encoding="utf-8") as f:
        f.write("\n\n" + planted)
    result = _lint_imports(str(tmp_path))
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout, result.stdout
