"""Sensitivity to the inner-loop step size beta, MetaR vs MoEMeta, on the
bundled UMLS-One (1-shot): per-task inner losses with beta in {5, 0.5,
0.05}, no inner loop, and the published code's quirks (support loss averaged
over the meta-batch, i.e. a step of beta / B in training, and added to the
outer loss).

    python benchmarks/inner_step_umls.py [--seeds 0] [--max-steps 600] \
        [--batch-size 256] [--output FILE]
"""
import argparse
import os
import sys
import time

from _common import machine, mean_std, run_train, write_output

VARIANTS = [
    ('beta = 5 (MetaR default)', ['--inner-lr', '5']),
    ('beta = 0.5', ['--inner-lr', '0.5']),
    ('beta = 0.05 (MoEMeta default)', ['--inner-lr', '0.05']),
    ('no inner loop (0 steps)', ['--set', 'learner.inner_steps=0']),
    ('published quirks, beta = 5', ['--inner-lr', '5', '--set',
                                    'learner.published_quirks=true']),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--max-steps', type=int, default=600)
    parser.add_argument('--eval-every', type=int, default=200)
    parser.add_argument('--batch-size', type=int, default=256)
    parser.add_argument('--runs-dir', default='runs/inner_step_umls')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    lines = [
        '### Inner step size, UMLS-One 1-shot, test MRR', '',
        f'Budget per run: {args.max_steps} steps of B = {args.batch_size}, '
        f'dev MRR every {args.eval_every} steps, random initial entity '
        f'vectors; seeds {args.seeds}; {machine()}.', '',
        '| inner loop | MetaR | MoEMeta |', '|---|---|---|'
    ]
    for label, flags in VARIANTS:
        cells = []
        for model in ('metar', 'moemeta'):
            mrrs = []
            for seed in args.seeds:
                tag = label.split(' (')[0].replace(' ', '_').replace(
                    '=', '').replace(',', '')
                out = os.path.join(args.runs_dir, f'{model}_{tag}_s{seed}')
                t0 = time.perf_counter()
                res = run_train(['--model', model, '--seed', str(seed),
                                 '--max-steps', str(args.max_steps),
                                 '--eval-every', str(args.eval_every),
                                 '--batch-size', str(args.batch_size),
                                 '--output', out, '--quiet'] + flags)
                mrrs.append(res['test']['mrr'])
                print(f'{model} {label} seed {seed}: {mrrs[-1]:.3f} '
                      f'({time.perf_counter() - t0:.0f} s)', file=sys.stderr)
            cells.append(mean_std(mrrs))
        lines.append(f'| {label} | ' + ' | '.join(cells) + ' |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
