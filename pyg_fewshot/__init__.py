r"""pyg_fewshot: few-shot relational learning on knowledge graphs with
PyTorch Geometric.

The package is layered; each layer only imports the ones before it:

``ops`` → ``optim`` → ``data`` → ``nn`` → ``models`` → ``meta`` →
``evaluation`` → ``pipeline`` → ``cli``.
"""

__version__ = '0.1.0'

__all__ = ['__version__', 'pipeline']


def __getattr__(name: str):
    # ``pyg_fewshot.pipeline(...)`` without importing torch on
    # ``import pyg_fewshot`` (the CLI's --help stays fast).
    if name == 'pipeline':
        import importlib
        return importlib.import_module('.pipeline', __name__)
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
