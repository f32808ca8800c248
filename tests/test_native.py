"""Tests for choosing native modules or their twins, and the CI check that native code is built."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from hfstream import native
from hfstream.loader import _shuffle_py


@pytest.fixture
def env(monkeypatch):
    """Start from neither variable set; tests set what they need."""
    monkeypatch.delenv("HFSTREAM_PURE_PYTHON", raising=False)
    monkeypatch.delenv("HFSTREAM_REQUIRE_NATIVE", raising=False)
    return monkeypatch


@pytest.mark.skipif(os.environ.get("HFSTREAM_REQUIRE_NATIVE") != "1",
                    reason="HFSTREAM_REQUIRE_NATIVE is not 1: native modules are optional here")
@pytest.mark.parametrize("name", sorted(native.NATIVE_MODULES))
def test_required_native_modules_are_built(name):
    # Imports the module directly, so this fails in pure-Python mode too if the build is missing.
    try:
        importlib.import_module(f"hfstream.{name}")
    except ImportError as exc:
        pytest.fail(f"HFSTREAM_REQUIRE_NATIVE=1 but hfstream.{name} cannot be imported ({exc}); "
                    "the native build failed or did not run (python setup.py build_ext --inplace)")


def test_use_native_follows_the_environment(env):
    assert native.use_native()
    env.setenv("HFSTREAM_PURE_PYTHON", "1")
    assert not native.use_native()
    env.setenv("HFSTREAM_PURE_PYTHON", "0")
    assert native.use_native()


def test_pure_python_mode_loads_the_twin(env):
    env.setenv("HFSTREAM_PURE_PYTHON", "1")
    assert native.load("_shuffle", "hfstream.loader._shuffle_py") is _shuffle_py
    assert native.native_status() == {name: False for name in native.NATIVE_MODULES}


def test_missing_native_module_falls_back_to_the_twin(env):
    assert native.load("_no_such_module", "hfstream.loader._shuffle_py") is _shuffle_py


def test_missing_native_module_is_an_error_when_required(env):
    env.setenv("HFSTREAM_REQUIRE_NATIVE", "1")
    with pytest.raises(ImportError, match=r"hfstream\._no_such_module is required") as info:
        native.load("_no_such_module", "hfstream.loader._shuffle_py")
    assert "build_ext --inplace" in str(info.value)


def test_pure_python_mode_wins_over_require_native(env):
    env.setenv("HFSTREAM_REQUIRE_NATIVE", "1")
    env.setenv("HFSTREAM_PURE_PYTHON", "1")
    assert native.load("_no_such_module", "hfstream.loader._shuffle_py") is _shuffle_py


@pytest.mark.parametrize("name", sorted(native.NATIVE_MODULES))
def test_status_reports_whether_the_native_module_is_active(env, name):
    try:
        importlib.import_module(f"hfstream.{name}")
        built = True
    except ImportError:
        built = False
    assert native.native_status()[name] is built


def test_facades_use_what_native_status_reports():
    # The facades chose once at import, under this process's real environment.
    from hfstream.loader.packing import TokenPacker
    from hfstream.loader.shuffle import ShuffleBuffer

    status = native.native_status()
    assert ShuffleBuffer.__module__ == ("hfstream._shuffle" if status["_shuffle"]
                                        else "hfstream.loader._shuffle_py")
    assert TokenPacker.__module__ == ("hfstream._packing" if status["_packing"]
                                      else "hfstream.loader._packing_py")


FALLBACK = """
import sys, warnings
class NoNative:
    def find_spec(self, name, path=None, target=None):
        if name in ("hfstream._shuffle", "hfstream._packing"):
            raise ImportError(f"{name} blocked for this test")
sys.meta_path.insert(0, NoNative())
warnings.simplefilter("default")
from hfstream.loader import shuffle, packing
print(shuffle.ShuffleBuffer.__module__, packing.TokenPacker.__module__)
"""


def test_a_missing_native_build_is_said_once_at_first_use():
    env = {k: v for k, v in os.environ.items() if k not in ("HFSTREAM_PURE_PYTHON", "HFSTREAM_REQUIRE_NATIVE")}
    out = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["hfstream.loader._shuffle_py", "hfstream.loader._packing_py"]
    assert out.stderr.count("NativeFallbackWarning") == 1 and "hfstream info" in out.stderr
    forced = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, timeout=60,
                            env={**env, "HFSTREAM_PURE_PYTHON": "1"})
    assert "NativeFallbackWarning" not in forced.stderr   # choosing the twins is not a surprise


def test_hfstream_info_reports_what_a_bug_report_needs():
    out = subprocess.run([sys.executable, "-m", "hfstream.cli.main", "info", "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert set(info["native"]) == {"_shuffle", "_packing"} and info["versions"]["torch"]
    assert info["cpus"]["tokenizer_threads"] >= 1 and "available" in info["cuda"]
    assert info["example_configs"].endswith("configs")
