"""Sphinx configuration for the lpsampling documentation (builds offline)."""

import os
import sys

# Document the checkout this file lives in, not whatever copy is installed.
sys.path.insert(0, os.path.abspath(".."))
# Importing the package must not probe for accelerators while building the docs.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import lpsampling  # noqa: E402

project = "lpsampling"
author = "lpsampling contributors"
copyright = "2025, lpsampling contributors"
release = lpsampling.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: $...$ / $$...$$ math, ::: fences, automatic heading anchors.
myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
# reproduction.md includes the benchmark reports verbatim; their own heading levels jump
# (e.g. "#" then "####"), which is harmless once nested under a section of this site.
suppress_warnings = ["myst.header"]

# autodoc / napoleon: Google-style docstrings (Args: / Returns:), signatures from the code.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# "Attributes:" as field lists: NamedTuple fields are already documented by autodoc.
napoleon_use_ivar = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_default_options = {"members": True, "show-inheritance": False}

# No intersphinx: the build must not touch the network.

html_theme = "furo"
html_title = f"lpsampling {release}"
