"""MoEMeta ablations (the paper's: no neighbour aggregation, an MLP instead
of the mixture of experts, no local adaptation) next to the full model and
MetaR, on the bundled UMLS-One or on NELL-One.

    python benchmarks/ablations.py --dataset umls-one [--shots 1] \
        [--seeds 0 1 2] [--max-steps 1500] [--output FILE]
    python benchmarks/ablations.py --dataset nell-one --pretrain \
        --inner-lr 5 --moemeta-arg aggregator_scale=0.0 \
        --moemeta-arg projection=none ...

``--moemeta-arg`` and ``--inner-lr`` set the full model's configuration
(every MoEMeta variant starts from it and changes one part); MetaR keeps
its own defaults. ``--moemeta-arg`` takes MoEMeta's former flat option
names (``aggregator_scale=0.0``, ``projection=none``, ``load_balance=0.1``,
...; the run folders are named after them), passed to ``pyg-fewshot
train`` as the ``--set`` items they stand for (``_common.moemeta_sets``).

Every run goes through ``pyg-fewshot train``; finished runs in
``--runs-dir`` are reused.
"""
import argparse
import os
import sys
import time

from _common import machine, mean_std, moemeta_sets, run_train, \
    shared_dataset, write_output

# (label, model, former MoEMeta options of the change): each variant is the
# composition it names (model.aggregator=null, model.relation_meta=mlp,
# model.projection=null with learner.inner_steps=0, model.projection=null).
VARIANTS = [
    ('MoEMeta (full)', 'moemeta', []),
    ('w/o neighbour aggregation', 'moemeta', ['aggregate=False']),
    ('MLP instead of MoE', 'moemeta', ['moe=False']),
    ('w/o local adaptation', 'moemeta', ['local_adaptation=False']),
    ('w/o projection vectors (inner loop on the relation meta only)',
     'moemeta', ['projection=none']),
    ('MetaR', 'metar', []),
]
# Options of the mixture of experts, which the MLP variant has not.
_MOE_OPTIONS = ('num_experts', 'top_k', 'renormalize', 'scale_by_k',
                'load_balance', 'noisy_gating', 'expert_hidden')
KEYS = ['full', 'no-aggregation', 'mlp', 'no-local', 'no-projection',
        'metar']


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--dataset', default='umls-one',
                        help="'umls-one' (bundled) or 'nell-one' (shared "
                        'copy) or a folder')
    parser.add_argument('--data', default=None)
    parser.add_argument('--shots', type=int, default=1)
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--max-steps', type=int, default=1500)
    parser.add_argument('--eval-every', type=int, default=250)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--pretrain', action='store_true')
    parser.add_argument('--variants', nargs='+', default=KEYS, choices=KEYS)
    parser.add_argument('--moemeta-arg', action='append', default=[],
                        metavar='KEY=VALUE',
                        help='model argument of every MoEMeta variant')
    parser.add_argument('--inner-lr', default=None,
                        help='inner step of every MoEMeta variant')
    parser.add_argument('--runs-dir', default=None)
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    if args.dataset == 'umls-one' and args.data is None:
        dataset = 'umls-one'
    elif args.dataset == 'nell-one' or args.data:
        dataset = shared_dataset('nell-one', args.data)
    else:
        dataset = args.dataset
    config = ''.join(f'_{kv}' for kv in args.moemeta_arg) + (
        f'_beta{args.inner_lr}' if args.inner_lr else '')
    runs_dir = args.runs_dir or os.path.join(
        'runs', 'ablations', os.path.basename(dataset.rstrip('/')) +
        config.replace('=', '-').replace(',', '_').replace('*', 'rest'))

    lines = [
        f'### Ablations on {os.path.basename(dataset.rstrip("/"))}, '
        f'{args.shots}-shot, test set', '',
        f'Budget per run: at most {args.max_steps} steps of B = '
        f'{args.batch_size}, dev MRR every {args.eval_every} steps, '
        f"{'TransE-pretrained' if args.pretrain else 'randomly initialised'}"
        f' entities; seeds {args.seeds}; {machine()}.', '',
        '| variant | MRR | Hits@1 | Hits@5 | Hits@10 | train s / run |',
        '|---|---|---|---|---|---|'
    ]
    base_sets = moemeta_sets(args.moemeta_arg)  # fails early on a typo
    base_args = ([f'--inner-lr {args.inner_lr}'] if args.inner_lr else []) + \
        [f'--set {kv}' for kv in base_sets[1::2]]
    if base_args:
        lines[4:4] = ['Every MoEMeta variant: ' + ' '.join(
            f'`{b}`' for b in base_args) + ', plus the change it names.', '']
    for key, (label, model, flags) in zip(KEYS, VARIANTS):
        if key not in args.variants:
            continue
        if model == 'moemeta':
            # The variant's own change wins over the base configuration.
            own = {f.split('=')[0] for f in flags}
            if 'moe' in own:
                own.update(_MOE_OPTIONS)
            flags = [kv for kv in args.moemeta_arg
                     if kv.split('=')[0] not in own] + flags
        runs = []
        for seed in args.seeds:
            tag = label.split(' (')[0].replace(' ', '_').replace('/', '')
            out = os.path.join(runs_dir, f'{tag}_{args.shots}shot_s{seed}')
            argv = ['--model', model, '--dataset', dataset, '--shots',
                    str(args.shots), '--seed', str(seed), '--max-steps',
                    str(args.max_steps), '--eval-every',
                    str(args.eval_every), '--batch-size',
                    str(args.batch_size), '--output', out, '--quiet']
            if args.pretrain:
                argv.append('--pretrain')
            if model == 'moemeta' and args.inner_lr:
                argv += ['--inner-lr', args.inner_lr]
            argv += moemeta_sets(flags)
            t0 = time.perf_counter()
            runs.append(run_train(argv))
            print(f"{label} seed {seed}: {runs[-1]['test']['mrr']:.3f} "
                  f'({time.perf_counter() - t0:.0f} s)', file=sys.stderr)
        cols = [mean_std([r['test'][k] for r in runs])
                for k in ('mrr', 'hits@1', 'hits@5', 'hits@10')]
        secs = mean_std([r['train_seconds'] for r in runs])
        lines.append(f'| {label} | ' + ' | '.join(cols) + f' | {secs} |')
    base = runs[0]['test_random_baseline']
    lines.append(f"| random scoring (exact chance level) | {base['mrr']:.3f} "
                 f"| {base['hits@1']:.3f} | {base['hits@5']:.3f} | "
                 f"{base['hits@10']:.3f} | — |")
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
