r"""pyg_fewshot: few-shot relational learning on knowledge graphs with
PyTorch Geometric.

The package is layered; each layer only imports the ones before it:

``data`` → ``nn`` → ``models`` → ``meta`` → ``evaluation`` → ``cli``.
"""

__version__ = '0.1.0'

__all__ = ['__version__']
