r"""Command-line interface."""
