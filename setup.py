"""Build hook for the one compiled part: hub.validation._clean (Cython over lxml's public C API).

Everything else is in pyproject.toml. The extension is optional: where it cannot be built (no C
compiler), the install still succeeds and the validator uses the pure-Python clean tests it replaces.
"""

from __future__ import annotations

import lxml
from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("hub.validation._clean", ["hub/validation/_clean.pyx"], include_dirs=lxml.get_include(),
                   optional=True)],
        language_level=3,
        quiet=True,
    ),
)
