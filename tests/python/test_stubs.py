"""The type stubs (python/keel/_keel.pyi) describe the native module exactly."""

import ast
import pathlib

import keel
from keel import _keel

STUB = pathlib.Path(__file__).resolve().parents[2] / "python" / "keel" / "_keel.pyi"
DUNDERS = {"__init__", "__new__", "__enter__", "__exit__", "__iter__", "__next__", "__len__", "__repr__"}


def stub_tree():
    return ast.parse(STUB.read_text())


def test_every_public_name_has_a_stub():
    tree = stub_tree()
    names = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    names |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(_keel) if not n.startswith("_") or n in ("__version__", "_debug_panic")}
    assert public - names == set()


def test_every_method_has_a_stub_and_every_stub_a_method():
    for node in stub_tree().body:
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(_keel, node.name)
        if issubclass(cls, BaseException):
            continue
        stubbed = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
        real = {m for m in dir(cls) if not m.startswith("_")}
        assert real - stubbed == set(), node.name
        assert stubbed - real - DUNDERS == set(), node.name


def test_the_package_reexports_the_native_names():
    for name in keel.__all__:
        assert getattr(keel, name) is getattr(_keel, name, getattr(keel, name))


ROOT = pathlib.Path(__file__).resolve().parents[2]


def checker(module):
    """Runs ``python -m module ...`` from the repository root, or skips when
    the checker is not installed (scripts/python-env installs them)."""
    import importlib.util
    import subprocess
    import sys

    import pytest

    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")

    def run(*args):
        done = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr

    return run


def test_stubtest_finds_the_stub_and_the_module_in_agreement():
    checker("mypy.stubtest")("keel._keel", "--allowlist", "tests/python/stubtest-allowlist.txt")


def test_host_code_type_checks_strictly_against_the_stubs():
    checker("mypy")("--strict", "examples/python", "tests/python/typed_usage.py")


def test_the_typed_usage_runs():
    import runpy

    runpy.run_path(str(ROOT / "tests" / "python" / "typed_usage.py"), run_name="__main__")


def test_the_shapes_are_importable_at_run_time():
    from keel.types import Item, JobRecord, JobState  # noqa: F401

    assert keel.Item is Item and "types" in keel.__all__
