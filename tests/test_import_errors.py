"""`import spoofloss` without a usable compiled library must say what is wrong and how
to rebuild: not built at all, built for another Python, present but refused by the
loader (junk, or a symbol of the torch it was built against missing), or built
against another torch.

Each case is a copy of the imported spoofloss package (its Python files) in a
temporary folder, with the library left out or replaced by a stand-in: junk bytes
under the library's file name, a tiny library compiled here that needs a symbol
nothing provides, or a small `_C.py` whose build_info() names another torch. One fresh interpreter imports every copy in turn (importing torch once;
each failed import is dropped from sys.modules before the next) and reports back.
"""

from __future__ import annotations

import importlib.machinery
import json
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import spoofloss

PACKAGE_DIR = pathlib.Path(spoofloss.__file__).parent
REBUILD_COMMAND = "pip install --no-build-isolation -e ."
STAMP = spoofloss._TORCH_VERSION_STAMP
THIS_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]  # e.g. .cpython-311-x86_64-linux-gnu.so
OTHER_PYTHON_LIBRARY = "_C.cpython-27-fake-platform.so"   # a tag no interpreter here imports
FAKE_BUILD_VERSION = "1.0.0+elsewhere"
STAMP_VERSION = "1.1.0+stamped"
MISSING_SYMBOL = "spoofloss_test_symbol_of_an_older_torch"

FAKE_C_MODULE = f'''
"""Stand-in for a library built against another torch."""
def build_info():
    return {{"torch_version": "{FAKE_BUILD_VERSION}", "with_cuda": False, "cuda_archs": ""}}
'''

# Runs in the fresh interpreter: argv[1] is a JSON list of [case, folder holding the package].
IMPORT_EACH = textwrap.dedent('''
    import importlib, importlib.util, json, sys
    import torch

    report = {}
    for case, root in json.loads(sys.argv[1]):
        sys.path.insert(0, root)
        importlib.invalidate_caches()
        origin = importlib.util.find_spec("spoofloss").origin
        try:
            import spoofloss
            report[case] = {"origin": origin, "ok": True, "file": spoofloss.__file__}
        except ImportError as error:
            cause = error.__cause__
            report[case] = {"origin": origin, "ok": False, "message": str(error),
                            "cause": None if cause is None else str(cause)}
        finally:
            sys.path.remove(root)
            for name in [n for n in sys.modules if n == "spoofloss" or n.startswith("spoofloss.")]:
                del sys.modules[name]
    print(json.dumps(report))
''')


def copy_package(root: pathlib.Path) -> pathlib.Path:
    """The imported package's Python files under root/spoofloss, without any _C."""
    target = root / "spoofloss"
    shutil.copytree(PACKAGE_DIR, target, ignore=shutil.ignore_patterns("_C*", "__pycache__"))
    assert not list(target.glob("_C*"))
    return target


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    base = tmp_path_factory.mktemp("import_errors")
    cases = {}

    cases["not_built"] = copy_package(base / "not_built")

    other_python = copy_package(base / "other_python")
    (other_python / OTHER_PYTHON_LIBRARY).write_bytes(b"built for some other interpreter")
    cases["other_python"] = other_python

    for case, stamp in (("refused_with_stamp", STAMP_VERSION), ("refused_without_stamp", None)):
        package = copy_package(base / case)
        (package / f"_C{THIS_SUFFIX}").write_bytes(b"\x00junk, not a shared library\x00" * 8)
        if stamp is not None:
            (package / STAMP).write_text(stamp + "\n")
        cases[case] = package

    # what a torch upgrade does to a built library: a symbol it links to is gone
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is not None:
        package = copy_package(base / "undefined_symbol")
        source = base / "needs_missing_symbol.c"
        source.write_text(f"extern void {MISSING_SYMBOL}(void);\nvoid PyInit__C(void) {{ {MISSING_SYMBOL}(); }}\n")
        subprocess.run([compiler, "-shared", "-fPIC", "-o", str(package / f"_C{THIS_SUFFIX}"), str(source)],
                       check=True, capture_output=True, timeout=120)
        (package / STAMP).write_text(STAMP_VERSION + "\n")
        cases["undefined_symbol"] = package

    other_torch = copy_package(base / "other_torch")
    (other_torch / "_C.py").write_text(FAKE_C_MODULE)
    cases["other_torch"] = other_torch

    # the control, imported last since it registers the real ops: the same copy
    # with the real library imports
    working = copy_package(base / "working")
    shutil.copy2(spoofloss._C.__file__, working / pathlib.Path(spoofloss._C.__file__).name)
    cases["working"] = working

    plan = [[case, str(package.parent)] for case, package in cases.items()]
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, json.dumps(plan)], capture_output=True, text=True,
                          timeout=300, cwd=base)
    assert proc.returncode == 0, f"the importing interpreter failed:\n{proc.stdout}\n{proc.stderr}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for case, package in cases.items():
        assert pathlib.Path(result[case]["origin"]) == package / "__init__.py", \
            f"{case}: imported {result[case]['origin']}, not the copy"
    return result, cases


def failure(report, case) -> str:
    result, _ = report
    assert not result[case]["ok"], f"{case}: import spoofloss succeeded"
    return result[case]["message"]


def test_the_copy_with_the_real_library_imports(report):
    result, cases = report
    assert result["working"]["ok"], result["working"]
    assert pathlib.Path(result["working"]["file"]) == cases["working"] / "__init__.py"


def test_missing_library_says_not_built(report):
    message = failure(report, "not_built")
    _, cases = report
    assert "is not built" in message and str(cases["not_built"]) in message, message
    assert "fails to load" not in message and "another Python" not in message, message
    assert REBUILD_COMMAND in message, message


def test_library_for_another_python_is_named(report):
    message = failure(report, "other_python")
    assert "is not built" in message and OTHER_PYTHON_LIBRARY in message, message
    assert "another Python" in message and sys.implementation.cache_tag in message, message
    assert REBUILD_COMMAND in message, message


def test_refused_library_names_loader_error_and_stamped_torch(report):
    message = failure(report, "refused_with_stamp")
    result, cases = report
    assert f"{cases['refused_with_stamp'] / ('_C' + THIS_SUFFIX)} is present but fails to load" in message, message
    assert result["refused_with_stamp"]["cause"] in message, message  # the loader's own words
    assert f"built against torch {STAMP_VERSION}" in message, message
    assert f"torch {torch.__version__} is imported" in message, message
    assert REBUILD_COMMAND in message, message


def test_library_with_an_undefined_symbol(report):
    result, cases = report
    if "undefined_symbol" not in result:
        pytest.skip("no C compiler (cc, gcc) to build a library with an undefined symbol")
    message = failure(report, "undefined_symbol")
    assert f"{cases['undefined_symbol'] / ('_C' + THIS_SUFFIX)} is present but fails to load" in message, message
    assert f"undefined symbol: {MISSING_SYMBOL}" in message, message
    assert f"built against torch {STAMP_VERSION}; torch {torch.__version__} is imported" in message, message
    assert REBUILD_COMMAND in message, message


def test_refused_library_without_stamp(report):
    message = failure(report, "refused_without_stamp")
    assert "is present but fails to load" in message and "probably built against another torch" in message, message
    assert f"torch {torch.__version__} is imported" in message and REBUILD_COMMAND in message, message


def test_library_built_against_another_torch_names_both_versions(report):
    message = failure(report, "other_torch")
    _, cases = report
    assert str(cases["other_torch"] / "_C.py") in message, message
    assert f"built against torch {FAKE_BUILD_VERSION}, but torch {torch.__version__} is imported" in message, message
    assert REBUILD_COMMAND in message, message


def test_stamp_beside_the_library_names_its_torch():
    """setup.py writes the stamp at build time; it must agree with the library itself."""
    stamp = pathlib.Path(spoofloss._C.__file__).with_name(STAMP)
    if not stamp.exists():
        pytest.skip(f"no {STAMP} beside {spoofloss._C.__file__}: this library was not built by setup.py "
                    "(copied in, or built before the stamp existed)")
    assert stamp.read_text().strip() == spoofloss.build_info()["torch_version"]
