"""The type stubs (python/keel/_keel.pyi) describe the native module exactly."""

import ast
import pathlib

import keel
from keel import _keel

STUB = pathlib.Path(__file__).resolve().parents[2] / "python" / "keel" / "_keel.pyi"
DUNDERS = {"__init__", "__enter__", "__exit__", "__iter__", "__next__", "__len__", "__repr__"}


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
