"""Same metrics before and after the issue-15 redesign: nine fixed-seed
UMLS-One runs of the last commit before it (``b39fae6``, the old options)
and of a commit after it (the new configuration), compared key by key.

    python benchmarks/redesign_equality.py [--base b39fae6] [--head HEAD]
        [--runs-dir runs/redesign_equality]

Both commits are checked out into temporary git worktrees and run in their
own processes (``pyg-fewshot train``, 200 steps of B = 256, dev MRR every
100 steps, seed 0). A row is ``same`` when dev and test MRR, Hits@1/5/10
and mean rank and every validation score of the history are equal as
floating-point numbers. FusionAdapter with a MoEMeta backbone is expected
to differ: before the redesign its test-time tuning used FusionAdapter's
own inner loop in ``train`` and the run's learner in ``evaluate``; now both
use the learner, so ``train`` after equals ``evaluate`` before (the table
shows that too).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Dict, List, Tuple

from _common import REPO, machine, write_output
from compare_commits import worktree

COMMON = ['--dataset', 'umls-one', '--seed', '0', '--max-steps', '200',
          '--eval-every', '100', '--batch-size', '256', '--quiet',
          '--no-resume']
_AGG_OLD = ['--model-arg', 'projection=none', '--model-arg',
            'aggregator_scale=0.0', '--model-arg', 'aggregator_init=transe',
            '--model-arg', 'aggregator_act=None', '--model-arg',
            'aggregator_gate=False', '--model-arg', 'aggregator_mix=convex',
            '--model-arg', 'aggregator_relations=translation',
            '--model-arg', 'aggregator_update_dropout=0.5']
_AGG_NEW = ['--set', 'model.projection=null', '--set',
            'model.aggregator_kwargs={residual_scale: 0.0, init: transe, '
            'act: null, gate: false, mix: convex, update_dropout: 0.5}',
            '--set', 'model.relation_init=translation']
# name -> (options before the redesign, options after it)
RUNS: Dict[str, Tuple[List[str], List[str]]] = {
    'metar': (['--model', 'metar'], ['--model', 'metar']),
    'moemeta': (['--model', 'moemeta'], ['--model', 'moemeta']),
    'fusion': (['--model', 'fusionadapter'], ['--model', 'fusionadapter']),
    'fusion_moemeta': (
        ['--model', 'fusionadapter', '--backbone', 'moemeta',
         '--tta-steps', '3'],
        ['--model', 'fusionadapter', '--set', 'model.backbone={name: '
         'moemeta}', '--set', 'model.tta_steps=3']),
    'metar_quirks': (
        ['--model', 'metar', '--published-quirks', '--published-eval-mode'],
        ['--model', 'metar', '--preset', 'published-code']),
    'moemeta_transe': (['--model', 'moemeta', '--pretrain', '--inner-lr',
                        '5'] + _AGG_OLD,
                       ['--model', 'moemeta', '--pretrain', '--inner-lr',
                        '5'] + _AGG_NEW),
    'moemeta_lb': (
        ['--model', 'moemeta', '--model-arg', 'load_balance=0.1',
         '--model-arg', 'noisy_gating=True', '--model-arg',
         'projection=paper'],
        ['--model', 'moemeta', '--set', 'model.relation_meta_kwargs={'
         'load_balance: 0.1, noisy_gating: true}', '--set',
         'model.projection=paper']),
    'moemeta_mlp_noagg': (
        ['--model', 'moemeta', '--model-arg', 'moe=False', '--model-arg',
         'aggregate=False', '--inner-steps', '2', '--second-order'],
        ['--model', 'moemeta', '--set', 'model.relation_meta=mlp', '--set',
         'model.aggregator=null', '--set', 'learner.inner_steps=2', '--set',
         'learner.first_order=false']),
    'moemeta_bg': (['--model', 'moemeta', '--background-tasks', '--shots',
                    '3'],
                   ['--model', 'moemeta', '--background-tasks', '--shots',
                    '3']),
}
KEYS = ('mrr', 'hits@1', 'hits@5', 'hits@10', 'mean_rank')


def train(tree: str, options: List[str], out: str) -> dict:
    path = os.path.join(out, 'results.json')
    if not os.path.isfile(path):  # finished runs are reused
        env = dict(os.environ, PYTHONPATH=tree)
        subprocess.run([sys.executable, '-m', 'pyg_fewshot', 'train',
                        '--output', out] + COMMON + options, env=env,
                       check=True, stdout=subprocess.DEVNULL, cwd=tree)
    with open(path) as f:
        return json.load(f)


def evaluate(tree: str, out: str) -> float:
    env = dict(os.environ, PYTHONPATH=tree)
    target = os.path.join(out, 'evaluate.json')
    subprocess.run([sys.executable, '-m', 'pyg_fewshot', 'evaluate',
                    '--checkpoint', out, '--output', target], env=env,
                   check=True, stdout=subprocess.DEVNULL, cwd=tree)
    with open(target) as f:
        return json.load(f)['mrr']


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('--base', default='b39fae6')
    parser.add_argument('--head', default='HEAD')
    parser.add_argument('--runs-dir', default=os.path.join(
        REPO, 'runs', 'redesign_equality'))
    parser.add_argument('--only', nargs='+', choices=list(RUNS),
                        default=list(RUNS))
    parser.add_argument('--output', default=None)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix='pyg_fewshot_equality_')
    rows = []
    try:
        trees = {'base': worktree(args.base, root),
                 'head': worktree(args.head, root)}
        for name in args.only:
            res = {}
            for side, options in zip(('base', 'head'), RUNS[name]):
                out = os.path.join(os.path.abspath(args.runs_dir), side,
                                   name)
                res[side] = train(trees[side], options, out)
            a, b = res['base'], res['head']
            same = all(a[s][k] == b[s][k] for s in ('dev', 'test')
                       for k in KEYS) and (
                [h['score'] for h in a['history']] ==
                [h['score'] for h in b['history']])
            note = ''
            if name == 'fusion_moemeta':
                before = evaluate(trees['base'], os.path.join(
                    os.path.abspath(args.runs_dir), 'base', name))
                note = (f"`evaluate` before: {before:.6f} (train after "
                        f"{'equals' if before == b['test']['mrr'] else 'differs from'} it)")
            rows.append(f"| {name} | {'same' if same else 'differs'} | "
                        f"{a['test']['mrr']:.6f} | {b['test']['mrr']:.6f} | "
                        f"{a['dev']['mrr']:.6f} | {b['dev']['mrr']:.6f} | "
                        f'{note} |')
            print(rows[-1], file=sys.stderr)
    finally:
        for path in os.listdir(root):
            subprocess.run(['git', '-C', REPO, 'worktree', 'remove',
                            '--force', os.path.join(root, path)],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)
    lines = [f'Fixed-seed UMLS-One runs of `{args.base}` (before the '
             f'redesign) and `{args.head}` (after), 200 steps of B = 256, '
             f'seed 0 ({machine()}).', '',
             f'| run | metrics and history | test MRR {args.base} | test '
             f'MRR {args.head} | dev MRR {args.base} | dev MRR {args.head} '
             f'| note |', '|---|---|---|---|---|---|---|'] + rows
    write_output('\n'.join(lines), args.output)


if __name__ == '__main__':
    main()
