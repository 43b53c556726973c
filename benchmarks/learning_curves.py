"""Dev-MRR learning curves of training runs, from their run folders.

    python benchmarks/learning_curves.py RUN_DIR [RUN_DIR ...]
        [--labels A B ...] [--output docs/figures/curves.png]
        [--title TEXT] [--x steps|minutes] [--reach MRR]

Each folder's validation history is read from its ``results.json`` (a
finished run) or else from its ``last.pt`` (a run still training, or one
that was stopped), so the curves of runs in progress can be drawn as they
go; the best validation of each run is marked. ``--x minutes`` draws them
against training time (validation excluded), which the history records
from version 0.1.0's ``train_seconds`` on. Prints one line per run:
steps so far, best dev MRR and its step (and minutes), and whether it
finished.

A run trained with ``--set trainer.monitor=[test]`` also records the test
MRR at every validation (never used to choose); its test curve is drawn
dashed in the same colour, and ``--reach MRR`` prints the first
validation whose test MRR reaches that level (its step and training
minutes), the time to a published figure.
"""
import argparse
import json
import os
import sys
from typing import Dict, List, Tuple


def history(folder: str) -> Tuple[List[Dict[str, float]], int, bool]:
    r"""``(history, steps, finished)`` of a run folder."""
    results = os.path.join(folder, 'results.json')
    if os.path.isfile(results):
        with open(results) as f:
            r = json.load(f)
        return r['history'], r['steps'], True
    from pyg_fewshot.meta import load_checkpoint
    state = load_checkpoint(os.path.join(folder, 'last.pt'))
    return state['history'], state['step'], False


def reached(hist: List[Dict[str, float]], level: float) -> str:
    r"""When the recorded test MRR first reaches ``level``."""
    if not any('test_mrr' in h for h in hist):
        return 'no test MRR recorded (train with trainer.monitor=[test])'
    for h in hist:
        if h.get('test_mrr', -1.0) >= level:
            minutes = (f", {h['train_seconds'] / 60:.1f} training minutes"
                       if 'train_seconds' in h else '')
            return (f"test MRR {h['test_mrr']:.4f} >= {level} first at step "
                    f"{h['step']}{minutes}")
    best = max(h.get('test_mrr', -1.0) for h in hist)
    return f'test MRR never reached {level} (highest {best:.4f})'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--labels', nargs='+', default=None)
    parser.add_argument('--title', default='dev MRR during meta-training')
    parser.add_argument('--output', required=True)
    parser.add_argument('--x', choices=['steps', 'minutes'],
                        default='steps',
                        help='horizontal axis (default: steps)')
    parser.add_argument('--reach', type=float, default=None,
                        help='print when the test curve first reaches this '
                             'MRR (runs that monitor the test set)')
    args = parser.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(r))
                             for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit('error: --labels needs one label per run')

    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 3.6), layout='constrained')
    ax = fig.subplots()
    any_test = False
    for folder, label in zip(args.runs, labels):
        hist, steps, finished = history(folder)
        if args.x == 'minutes':
            if not all('train_seconds' in h for h in hist):
                raise SystemExit(f"error: {folder}: its history records no "
                                 f"training time; use --x steps")
            xs = [h['train_seconds'] / 60 for h in hist]
        else:
            xs = [h['step'] for h in hist]
        ys = [h['score'] for h in hist]
        best = max(range(len(ys)), key=ys.__getitem__)
        line, = ax.plot(xs, ys, label=label, linewidth=1.2)
        ax.plot([xs[best]], [ys[best]], marker='o', color=line.get_color())
        tested = [(x, h) for x, h in zip(xs, hist) if 'test_mrr' in h]
        if tested:
            any_test = True
            ax.plot([x for x, _ in tested], [h['test_mrr'] for _, h in tested],
                    linestyle='--', linewidth=1.0, color=line.get_color())
        if args.reach is not None:
            print(f'{label}: {reached(hist, args.reach)}', file=sys.stderr)
        print(f'{label}: {steps} steps ({"finished" if finished else "in progress"}), '
              f'best dev MRR {ys[best]:.4f} at step {hist[best]["step"]}'
              + (f' ({xs[best]:.1f} min)' if args.x == 'minutes' else ''),
              file=sys.stderr)
    ax.set(xlabel=('training minutes (validation excluded)'
                   if args.x == 'minutes' else 'meta-training step'),
           ylabel='MRR (dev solid, test dashed)' if any_test else 'dev MRR',
           title=args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize='small')
    os.makedirs(os.path.dirname(os.path.abspath(args.output)),
                exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f'written to {args.output}', file=sys.stderr)


if __name__ == '__main__':
    main()
