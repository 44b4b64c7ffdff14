"""Build glue only: build_tools/ compiles the kernels and renders the launchers."""

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))


class AotBuildExt(build_ext):
    """AOT-compile every kernel variant (cached), then build the extension from csrc/ + build/gen/."""

    def run(self):
        from build_tools.build import build
        from build_tools.toolchain import include_dirs

        build()
        for ext in self.extensions:
            ext.include_dirs.extend(include_dirs())
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1
        super().run()


ext = Extension(
    "aot_sdpa._C",
    sources=["csrc/aot_sdpa_ext.cpp", "csrc/aot_fastpath.cpp", "csrc/aot_runtime.cpp",
             "csrc/aot_cuda.cpp", "csrc/aot_images.cpp",
             "build/gen/aot_kernels.cpp"],
    include_dirs=["csrc"],
    extra_compile_args=["-std=c++17", "-O2", "-fvisibility=hidden"],
    libraries=["dl"],
    depends=["csrc/aot_runtime.h", "csrc/aot_cuda.h", "csrc/aot_errors.h", "csrc/aot_fastpath.h"],
    language="c++",
)

setup(ext_modules=[ext], cmdclass={"build_ext": AotBuildExt})
