"""Chooses MoEMeta's configuration for NELL-One on the dev set.

    python benchmarks/select_nell_one.py [--data PATH] [--max-steps 600] \
        [--runs-dir runs/explore] [--output FILE]

The inner step size and the local parameters were tuned on UMLS-One (random
initial vectors), where a small step (0.05) on the relation meta *and* the
projection vectors is best; NELL-One starts from TransE vectors, where
MetaR's large step (5) on the relation meta is what works. This script
trains each candidate once (seed 0, ``--max-steps`` steps of B = 1024,
TransE-pretrained background) through ``pyg-fewshot train`` and ranks them
by **dev** MRR; the test MRR is printed beside it for the record but plays
no part in the choice. Finished runs in ``--runs-dir`` are reused.
"""
import argparse
import sys

from _common import machine, sets, shared_dataset, train_pretrained, \
    write_output

# name -> (description, extra CLI arguments); the names are those of the
# run folders (finished runs are reused).
REZERO = 'model.aggregator_kwargs.residual_scale=0.0'
CANDIDATES = {
    'default': ('paper layers, beta 0.05 (library default)', []),
    'b5': ('paper layers, beta 5', ['--inner-lr', '5']),
    'moemeta_rezero_b5': ('identity-at-init aggregator, beta 5',
                          ['--inner-lr', '5'] + sets(REZERO)),
    'rezero_rel5': ('identity-at-init aggregator, beta 5 on the relation '
                    'meta, 0.05 on the projection vectors',
                    ['--inner-lr', 'rel=5,*=0.05'] + sets(REZERO)),
    'rezero_noproj_b5': ('identity-at-init aggregator, no projection '
                         'vectors, beta 5',
                         ['--inner-lr', '5'] + sets(
                             REZERO, 'model.projection=null')),
    'rezero_noproj_fixednbr_b5': ('identity-at-init aggregator, no '
                                  'projection vectors, beta 5, the first 50 '
                                  'neighbours in training too',
                                  ['--inner-lr', '5'] + sets(
                                      REZERO, 'model.projection=null',
                                      # benchmarks/_modules.py
                                      'model.aggregator=first_neighbors')),
    'noagg_b5': ('no aggregator, beta 5',
                 ['--inner-lr', '5'] + sets('model.aggregator=null')),
    'noagg_rel5': ('no aggregator, beta 5 on the relation meta, 0.05 on '
                   'the projection vectors',
                   ['--inner-lr', 'rel=5,*=0.05'] + sets(
                       'model.aggregator=null')),
    'noagg_noproj_b5': ('no aggregator, no projection vectors, beta 5',
                        ['--inner-lr', '5'] + sets(
                            'model.aggregator=null',
                            'model.projection=null')),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--data', default=None)
    parser.add_argument('--candidates', nargs='+', default=list(CANDIDATES),
                        choices=list(CANDIDATES))
    parser.add_argument('--max-steps', type=int, default=600)
    parser.add_argument('--eval-every', type=int, default=200)
    parser.add_argument('--runs-dir', default='runs/explore')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    data = shared_dataset('nell-one', args.data)

    rows = []
    for name in args.candidates:
        desc, extra = CANDIDATES[name]
        res = train_pretrained(['--model', 'moemeta'] + extra, data, 1, 0,
                               args.max_steps, args.eval_every,
                               f'{args.runs_dir}/{name}')
        rows.append((res['dev']['mrr'], res['test']['mrr'], name, desc,
                     res['train_seconds']))
        print(f"{name}: dev {res['dev']['mrr']:.3f} test "
              f"{res['test']['mrr']:.3f}", file=sys.stderr)
    rows.sort(reverse=True)
    lines = [
        f'Budget per run: {args.max_steps} steps of B = 1,024, dev MRR every '
        f'{args.eval_every} steps (best kept), TransE-pretrained background, '
        f'seed 0; {machine()}. Sorted by dev MRR; the first row is the '
        f'choice.', '',
        '| candidate | dev MRR | test MRR | train s |',
        '|---|---|---|---|',
    ]
    for dev, test, name, desc, secs in rows:
        lines.append(f'| `{name}`: {desc} | {dev:.3f} | {test:.3f} | '
                     f'{secs:.0f} |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
