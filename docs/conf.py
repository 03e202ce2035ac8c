"""Sphinx configuration: the user guide (these Markdown pages, through MyST) and the API
reference (autodoc from the docstrings). Built in CI with warnings as errors:

    python -m sphinx -W -b html docs docs/_build/html
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import pyrovae  # noqa: E402

project = "pyrovae"
author = "the pyrovae developers"
copyright = "2026, the pyrovae developers"
release = pyrovae.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Pyro's and PyTorch's own classes are referred to by name; their docs are not built here
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = f"pyrovae {release}"
