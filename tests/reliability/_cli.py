"""Helpers of the CLI reliability tests."""
import os

import torch

from pyg_fewshot.cli.main import main
from pyg_fewshot.data.hetero import build_fewshot_data
from pyg_fewshot.data.writer import write_fewshot_folder


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


def write_dataset(folder, dev_triples=12, test_triples=12, num_entities=40):
    r"""A tiny dataset in the standard layout: four train relations of 12
    triples, one dev and one test relation of the given sizes (0: the
    split is empty, ``{}`` in its tasks file)."""
    g = torch.Generator().manual_seed(0)
    N = num_entities

    def pairs(offset, n):
        h = torch.randperm(N, generator=g)[:n]
        return torch.stack([h, (h + offset) % N], 1)

    bg = []
    for r in range(3):
        t = pairs(2 * r + 1, N // 2)
        bg.append(torch.stack([t[:, 0], torch.full((t.size(0), ), r),
                               t[:, 1]], 1))
    tasks = {
        'train': [(f'train{i}', pairs(3 + i, 12)) for i in range(4)],
        'dev': [('dev0', pairs(11, dev_triples))] if dev_triples else [],
        'test': [('test0', pairs(13, test_triples))] if test_triples else [],
    }
    cands = {name: torch.arange(N) for s in tasks.values() for name, _ in s}
    write_fewshot_folder(build_fewshot_data(N, torch.cat(bg),
                                            ['bg0', 'bg1', 'bg2'], tasks,
                                            cands), str(folder))
    return str(folder)
