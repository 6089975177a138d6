"""Build hook for the one compiled part: hub.validation._clean (Cython over lxml's public C API).

Everything else is in pyproject.toml. The extension is required: an install without a C compiler fails
here rather than running the validator without its fast path.
"""

from __future__ import annotations

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = cythonize(
    [Extension("hub.validation._clean", ["hub/validation/_clean.pyx"], include_dirs=lxml.get_include())],
    language_level=3,
    quiet=True,
)
setup(ext_modules=extensions)
