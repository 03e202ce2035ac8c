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
    "myst_nb",  # MyST Markdown pages, and the tutorials: text notebooks executed at every build
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_enable_extensions = ["dollarmath"]
nb_execution_mode = "force"  # the tutorials run at every build: a figure in the docs is one measured now
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_excludepatterns = ["_build/*"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Pyro's and PyTorch's own classes are referred to by name; their docs are not built here
nitpicky = False
suppress_warnings = ["myst.xref_missing"]

html_theme = "furo"
html_title = f"pyrovae {release}"
