"""Helpers of the CLI reliability tests."""
import os

from pyg_fewshot.cli.main import main


def run_cli(argv, capsys):
    r"""``(exit status, stdout, stderr)`` of ``pyg-fewshot ARGV``."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def files_under(folder):
    return [os.path.join(d, f) for d, _, fs in os.walk(folder) for f in fs]
