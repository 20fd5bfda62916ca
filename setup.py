"""Builds the ml2o Python package: CMake builds the engine and the extension ml2o._core.

The CMake build directory is build-python/ (kept between installs, so a reinstall recompiles only
what changed); ML2O_PYTHON_CUDA=ON builds the CUDA backend into it too (needs nvcc; slow).
ML2O_CMAKE_BUILD_DIR=DIR instead builds the target _core in DIR, a build directory already
configured with -DML2O_PYTHON=ON (scripts/test.sh does this to compile the engine once).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        given = os.environ.get("ML2O_CMAKE_BUILD_DIR")
        if given:
            build_dir = Path(given).resolve()
            cache = build_dir / "CMakeCache.txt"
            if not cache.exists() or "ML2O_PYTHON:BOOL=ON" not in cache.read_text():
                sys.exit(f"ML2O_CMAKE_BUILD_DIR={given}: not a build directory configured with -DML2O_PYTHON=ON")
        else:
            build_dir = ROOT / "build-python"
            cuda = os.environ.get("ML2O_PYTHON_CUDA", "OFF")
            configure = [
                "cmake", "-S", str(ROOT), "-B", str(build_dir),
                "-DCMAKE_BUILD_TYPE=Release", "-DML2O_PYTHON=ON", "-DML2O_TESTS=OFF",
                f"-DML2O_CUDA={cuda}", f"-DPython_EXECUTABLE={sys.executable}",
            ]
            if shutil.which("ccache"):
                configure.append("-DCMAKE_CXX_COMPILER_LAUNCHER=ccache")
            subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_core", "-j", jobs], check=True)
        built = next((build_dir / "python").glob("_core*.so"))
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(
    package_dir={"": "python"},
    packages=["ml2o"],
    ext_modules=[CMakeExtension("ml2o._core")],
    cmdclass={"build_ext": CMakeBuild},
    zip_safe=False,
    options={"build": {"build_base": "build-python/setuptools"}},
)
