"""Build hook for the one compiled part: hub.validation._clean (Cython over lxml's public C API).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler), the install still succeeds and the validator uses the pure-Python clean test it replaces.
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
for ext in extensions:
    ext.optional = True  # (cythonize's copies do not keep the flag: set it on what it returns)

setup(ext_modules=extensions)
