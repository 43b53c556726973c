"""Sphinx configuration of the pyg_fewshot documentation."""
import os
import sys

sys.path.insert(0, os.path.abspath('..'))

import pyg_fewshot  # noqa: E402

project = 'pyg_fewshot'
author = 'pyg_fewshot developers'
release = pyg_fewshot.__version__
version = release

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'sphinx.ext.viewcode',
    'myst_parser',
]
# Links to the PyTorch and PyG API pages. Sphinx fetches their inventories
# when it builds, so they are used only where the build may reach the web
# (PYG_FEWSHOT_DOCS_ONLINE=1); the offline CI build leaves the names as
# plain text rather than failing on the fetch.
if os.environ.get('PYG_FEWSHOT_DOCS_ONLINE') == '1':
    extensions.append('sphinx.ext.intersphinx')
    intersphinx_mapping = {
        'torch': ('https://docs.pytorch.org/docs/stable/', None),
        'torch_geometric': ('https://pytorch-geometric.readthedocs.io/en/'
                            'latest/', None),
        'python': ('https://docs.python.org/3/', None),
    }
source_suffix = {'.rst': 'restructuredtext', '.md': 'markdown'}
myst_enable_extensions = ['dollarmath']
myst_heading_anchors = 3
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'
autodoc_mock_imports = ['sentence_transformers', 'matplotlib']
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ['_build']
html_theme = 'alabaster'
nitpicky = False
suppress_warnings = ['myst.xref_missing']
