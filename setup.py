"""Native extensions only; all metadata lives in pyproject.toml.

Every ``ext/NAME.pyx`` compiles to the private module ``hfstream.NAME``. The package has a
pure-Python twin for each, so a machine without a C compiler still gets a working install
(set HFSTREAM_REQUIRE_NATIVE=1 to make a failed build an error, as CI does).
"""

import glob
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extensions, but fall back to pure Python if the compiler fails."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    @staticmethod
    def _fail(exc):
        if os.environ.get("HFSTREAM_REQUIRE_NATIVE") == "1":
            raise exc
        sys.stderr.write(f"WARNING: hfstream native extensions not built ({exc}); using pure Python.\n")


def extensions():
    from Cython.Build import cythonize

    sources = sorted(glob.glob(os.path.join("ext", "*.pyx")))
    exts = [
        Extension(f"hfstream.{os.path.splitext(os.path.basename(src))[0]}", [src],
                  extra_compile_args=["-O3"])
        for src in sources
    ]
    return cythonize(exts, language_level=3, compiler_directives={
        "boundscheck": False, "wraparound": False, "cdivision": True, "initializedcheck": False,
    })


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
