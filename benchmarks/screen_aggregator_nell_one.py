"""Screens options of MoEMeta's neighbour aggregator on NELL-One, chosen on
the dev set.

    python benchmarks/screen_aggregator_nell_one.py [--data PATH] \
        [--candidates ...] [--shots 1] [--seeds 0] [--max-steps 1000] \
        [--runs-dir runs/screen] [--output FILE]

Every candidate is the full MoEMeta (with its 50-neighbour attentive
aggregator) on top of the ``moemeta-dev`` configuration (inner step 5 on the
relation meta, no projection vectors, the aggregator's residual scale
learnable from 0), plus the options it names; ``noagg`` (no aggregator) is
there for reference only. Each run goes through ``pyg-fewshot train``
(TransE-pretrained background, B = 1,024) into ``--runs-dir``; finished runs
are reused. Rows are sorted by mean **dev** MRR over the seeds and shots
run; test MRR is printed for the record and plays no part in the choice.
"""
import argparse
import statistics
import sys

from _common import machine, sets, shared_dataset, train_pretrained, \
    write_output

BASE = ['--model', 'moemeta', '--inner-lr', '5'] + sets(
    'model.projection=null', 'model.aggregator_kwargs.residual_scale=0.0')

TRANSE = ('model.aggregator_kwargs.init=transe',
          'model.aggregator_kwargs.act=null',
          'model.aggregator_kwargs.gate=false',
          'model.aggregator_kwargs.mix=convex',
          'model.relation_init=translation')
FIXED = 'model.aggregator=fixed_message'  # benchmarks/_modules.py

# name -> (description, extra CLI arguments on top of BASE); the names are
# those of the run folders (finished runs are reused).
CANDIDATES = {
    'dev': ('moemeta-dev as it is (reference)', []),
    'noagg': ('no aggregator (reference, not a candidate)',
              sets('model.aggregator=null')),
    'sd50': ('stochastic depth: each entity\'s update dropped with p = 0.5 '
             'in training',
             sets('model.aggregator_kwargs.update_dropout=0.5')),
    'drop50': ('dropout 0.5 on the messages',
               sets('model.aggregator_kwargs.dropout=0.5')),
    'transrel': ('aggregator relations start at the mean translations',
                 sets('model.relation_init=translation')),
    'transe_convex': ('TransE message e_i - r_i (linear, no gate, mean '
                      'translations), convex mix from 0', sets(*TRANSE)),
    'transe_convex_sd50': ('transe_convex with stochastic depth 0.5',
                           sets(*TRANSE,
                                'model.aggregator_kwargs.update_dropout=0.5')),
    'transe_fixed': ('transe_convex with the message weights fixed '
                     '(attention, scale and relation vectors learnt)',
                     sets(*TRANSE, FIXED)),
    'transe_convex_gate': ('transe_convex with the paper\'s gate',
                           sets(*[a for a in TRANSE
                                  if a != 'model.aggregator_kwargs.gate=false'
                                  ])),
    'transe_fixed_sd50': ('transe_fixed with stochastic depth 0.5',
                          sets(*TRANSE, FIXED,
                               'model.aggregator_kwargs.update_dropout=0.5')),
    'transe_convex_sd75': ('transe_convex with stochastic depth 0.75',
                           sets(*TRANSE, 'model.aggregator_kwargs.'
                                'update_dropout=0.75')),
    'mean_nogate': ('mean attention, no gate',
                    sets('model.aggregator_kwargs.attention=mean',
                         'model.aggregator_kwargs.gate=false')),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--data', default=None)
    parser.add_argument('--candidates', nargs='+', default=list(CANDIDATES),
                        choices=list(CANDIDATES))
    parser.add_argument('--shots', nargs='+', type=int, default=[1])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0])
    parser.add_argument('--max-steps', type=int, default=1000)
    parser.add_argument('--eval-every', type=int, default=250)
    parser.add_argument('--runs-dir', default='runs/screen')
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    data = shared_dataset('nell-one', args.data)

    rows = []
    for name in args.candidates:
        desc, extra = CANDIDATES[name]
        devs, tests, cells, secs = [], [], [], []
        for shots in args.shots:
            for seed in args.seeds:
                out = f'{args.runs_dir}/{name}_{shots}shot_s{seed}'
                res = train_pretrained(BASE + extra, data, shots, seed,
                                       args.max_steps, args.eval_every, out)
                dev, test = res['dev']['mrr'], res['test']['mrr']
                devs.append(dev)
                tests.append(test)
                secs.append(res['train_seconds'])
                cells.append(f'K={shots} s{seed}: {dev:.3f} / {test:.3f}')
                print(f'{name} {shots}-shot seed {seed}: dev {dev:.3f} test '
                      f'{test:.3f} ({res["train_seconds"]:.0f} s)',
                      file=sys.stderr, flush=True)
        rows.append((statistics.mean(devs), statistics.mean(tests), name,
                     desc, '; '.join(cells), statistics.mean(secs)))
    rows.sort(reverse=True)
    lines = [
        f'Budget per run: {args.max_steps} steps of B = 1,024, dev MRR every '
        f'{args.eval_every} steps (best kept), TransE-pretrained background; '
        f'shots {args.shots}, seeds {args.seeds}; {machine()}. Sorted by mean '
        f'dev MRR (test for the record only).', '',
        '| candidate | mean dev MRR | mean test MRR | runs (dev / test) | '
        'train s |',
        '|---|---|---|---|---|',
    ]
    for dev, test, name, desc, cells, secs in rows:
        lines.append(f'| `{name}`: {desc} | {dev:.3f} | {test:.3f} | '
                     f'{cells} | {secs:.0f} |')
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
