"""Dev-MRR learning curves of training runs, from their run folders.

    python benchmarks/learning_curves.py RUN_DIR [RUN_DIR ...]
        [--labels A B ...] [--output docs/figures/curves.png]
        [--title TEXT] [--x steps|minutes]

Each folder's validation history is read from its ``results.json`` (a
finished run) or else from its ``last.pt`` (a run still training, or one
that was stopped), so the curves of runs in progress can be drawn as they
go; the best validation of each run is marked. ``--x minutes`` draws them
against training time (validation excluded), which the history records
from version 0.1.0's ``train_seconds`` on. Prints one line per run:
steps so far, best dev MRR and its step (and minutes), and whether it
finished.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument('runs', nargs='+')
    parser.add_argument('--labels', nargs='+', default=None)
    parser.add_argument('--title', default='dev MRR during meta-training')
    parser.add_argument('--output', required=True)
    parser.add_argument('--x', choices=['steps', 'minutes'],
                        default='steps',
                        help='horizontal axis (default: steps)')
    args = parser.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(r))
                             for r in args.runs]
    if len(labels) != len(args.runs):
        raise SystemExit('error: --labels needs one label per run')

    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 3.6), layout='constrained')
    ax = fig.subplots()
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
        print(f'{label}: {steps} steps ({"finished" if finished else "in progress"}), '
              f'best dev MRR {ys[best]:.4f} at step {hist[best]["step"]}'
              + (f' ({xs[best]:.1f} min)' if args.x == 'minutes' else ''),
              file=sys.stderr)
    ax.set(xlabel=('training minutes (validation excluded)'
                   if args.x == 'minutes' else 'meta-training step'),
           ylabel='dev MRR', title=args.title)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right', fontsize='small')
    os.makedirs(os.path.dirname(os.path.abspath(args.output)),
                exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f'written to {args.output}', file=sys.stderr)


if __name__ == '__main__':
    main()
