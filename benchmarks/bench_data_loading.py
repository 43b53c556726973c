#!/usr/bin/env python
r"""Data-layer benchmark: NELL-One loading, reloading and TransE pretraining.

Usage::

    python benchmarks/bench_data_loading.py                # $PYG_FEWSHOT_SHARED_DATA/nell-one
    python benchmarks/bench_data_loading.py --data /path/to/nell-one \
        --output docs/benchmarks_data.md [--skip-pretrain] [--synthetic-wiki] \
        [--wiki-layout DIR]

``--wiki-layout DIR`` adds the Wiki-One-size rows: a synthetic graph of
Wiki-One's size is written in the standard layout to ``DIR/raw`` (replacing
the layout files there), processed from it into ``DIR/root/processed`` and
reloaded; both folders are kept. Without NELL-One only these rows run.

Every measurement runs in a fresh Python process, so that its peak resident
set size (``ru_maxrss``) is its own; times exclude the interpreter start and
the imports (the ``import`` row gives the baseline those cost). Prints a
Markdown table; ``--output`` also writes it to a file. Exits 0 with a
message when NELL-One is absent.
"""
import argparse
import datetime
import json
import os
import os.path as osp
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mib() -> float:
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float('nan')


def _reset_peak_rss() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f:
            f.write('5')
        return True
    except OSError:
        return False


def wiki_synthetic():
    r"""``make_synthetic`` at Wiki-One's size: 4.8 M entities, 5.9 M
    background triples, 639 background and 183 task relations."""
    from pyg_fewshot.data import make_synthetic
    return make_synthetic(num_entities=4_838_244,
                          num_background_relations=639,
                          num_background_triples=5_859_240,
                          num_train_relations=133, num_dev_relations=16,
                          num_test_relations=34,
                          triples_per_relation=(50, 500),
                          num_candidates=1000, entity_names=False, seed=0)


def worker(args: argparse.Namespace) -> None:
    r"""One measurement; prints a JSON line."""
    sys.path.insert(0, REPO)
    import torch  # noqa: F401

    from pyg_fewshot.data import load_dataset, pretrain_transe, summary
    out: Dict = {}
    t = time.perf_counter()
    if args.phase == 'import':
        pass
    elif args.phase in ('process', 'reload'):
        ds = load_dataset(args.data, root=args.root, log=False,
                          force_reload=args.phase == 'process')
        out['summary'] = summary(ds.data)
    elif args.phase == 'pretrain':
        ds = load_dataset(args.data, root=args.root, log=False)
        t = time.perf_counter()
        pretrain_transe(ds.data, epochs=args.epochs, progress=False)
        out['epochs'] = args.epochs
    elif args.phase == 'synthetic-wiki':
        data = wiki_synthetic()
        out['summary'] = summary(data)
    elif args.phase == 'wiki-write':
        from pyg_fewshot.data import write_fewshot_folder
        data = wiki_synthetic()
        out['generate_seconds'] = time.perf_counter() - t
        out['rss_before_write_mib'] = _current_rss_mib()
        # Linux: restart the peak counter, so that the peak is the write's
        # own and not make_synthetic's.
        out['peak_reset'] = _reset_peak_rss()
        t = time.perf_counter()
        write_fewshot_folder(data, args.data, overwrite=True)
        out['sizes'] = {
            name: os.path.getsize(osp.join(args.data, name))
            for name in sorted(os.listdir(args.data))
        }
    else:
        raise ValueError(args.phase)
    out['seconds'] = time.perf_counter() - t
    out['peak_rss_mib'] = _rss_mib()
    print('RESULT ' + json.dumps(out))


def run(phase: str, data: str, root: str, epochs: Optional[int] = None,
        timeout: int = 1800) -> Dict:
    cmd = [sys.executable, osp.abspath(__file__), '--_worker', phase,
           '--data', data, '--root', root]
    if epochs is not None:
        cmd += ['--epochs', str(epochs)]
    proc = subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[7:])
    raise RuntimeError(f'{phase} failed:\n{proc.stdout}\n{proc.stderr}')


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'{cpu}, {os.cpu_count()} cores'


def main(argv: Optional[List[str]] = None) -> int:
    # _common imports torch: keep it out of the measured worker processes.
    from _common import load_average, write_output
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', help='NELL-One folder (default: '
                        '$PYG_FEWSHOT_SHARED_DATA/nell-one or '
                        '<repo>/../shared/data/nell-one)')
    parser.add_argument('--output', help='also write the table here')
    parser.add_argument('--repeat', type=int, default=3,
                        help='reload runs (the median is shown)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='TransE epochs (default: the library default)')
    parser.add_argument('--skip-pretrain', action='store_true')
    parser.add_argument('--synthetic-wiki', action='store_true',
                        help='also time make_synthetic at Wiki-One size')
    parser.add_argument('--wiki-layout', metavar='DIR',
                        help='also write a Wiki-One-size synthetic graph '
                        'in the standard layout to DIR/raw, process it '
                        '(DIR/root) and reload it')
    parser.add_argument('--_worker', dest='phase', help=argparse.SUPPRESS)
    parser.add_argument('--root', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        worker(args)
        return 0

    data = args.data
    if data is None:
        base = os.environ.get('PYG_FEWSHOT_SHARED_DATA',
                              osp.join(REPO, '..', 'shared', 'data'))
        data = osp.join(base, 'nell-one')
    data = osp.abspath(data)
    have_nell = osp.isfile(osp.join(data, 'path_graph'))
    if not have_nell:
        print(f"NELL-One not found at '{data}': skipping its rows "
              f"(pass --data or set PYG_FEWSHOT_SHARED_DATA)")
        if not args.wiki_layout:
            return 0

    sys.path.insert(0, REPO)
    import torch
    import torch_geometric

    from pyg_fewshot.data.pretrain import DEFAULT_EPOCHS
    epochs = DEFAULT_EPOCHS if args.epochs is None else args.epochs

    rows = []
    load_before = load_average()
    tmp = tempfile.mkdtemp(prefix='bench_data_')
    try:
        root = osp.join(tmp, 'nell-one')
        base = run('import', data, root)
        rows.append(('import torch + pyg_fewshot.data (baseline)', None,
                     base['peak_rss_mib'], ''))
        if have_nell:
            nell_rows(rows, args, data, root, tmp, epochs)
        if args.wiki_layout:
            wiki_rows(rows, osp.abspath(args.wiki_layout), args.repeat)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    cmd = 'python benchmarks/bench_data_loading.py ' + ' '.join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    lines = [
        f"Date: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}  ",
        f'Command: `{cmd.strip()}`  ',
        f'Machine: {machine()}; load average (1/5/15 min) before '
        f'{load_before}, after {load_average()}  ',
        f'Software: Python {platform.python_version()}, torch '
        f'{torch.__version__}, torch_geometric {torch_geometric.__version__}'
        f'  ',
        f'Data: {data if have_nell else "(NELL-One absent)"}',
        '',
        '| step | time (s) | peak RSS (MiB) | notes |',
        '|---|---:|---:|---|',
    ]
    for name, sec, rss, note in rows:
        t = '' if sec is None else f'{sec:.2f}'
        lines.append(f'| {name} | {t} | {rss:.0f} | {note} |')
    table = '\n'.join(lines) + '\n'
    write_output(table, args.output)
    return 0


def _mb(num_bytes: int) -> str:
    return f'{num_bytes / 1e6:.0f} MB'


def wiki_rows(rows: List, folder: str, repeat: int) -> None:
    r"""Write, process and reload a Wiki-One-size graph in the standard
    layout, each in a fresh process."""
    raw, root = osp.join(folder, 'raw'), osp.join(folder, 'root')
    res = run('wiki-write', raw, root)
    sizes = res['sizes']
    peak = ('of the write alone' if res['peak_reset'] else
            'includes the generation')
    rows.append((
        'Wiki-One size (synthetic): write the standard layout',
        res['seconds'], res['peak_rss_mib'],
        f"`write_fewshot_folder` alone, after generating the graph "
        f"({res['generate_seconds']:.1f} s; RSS "
        f"{res['rss_before_write_mib']:.0f} MiB before the write; peak "
        f"{peak}); "
        f"path_graph {_mb(sizes['path_graph'])}, "
        f"ent2ids {_mb(sizes['ent2ids'])}, all files "
        f"{_mb(sum(sizes.values()))}"))
    res = run('process', raw, root)
    s = res['summary']
    data_pt = osp.getsize(osp.join(root, 'processed', 'data.pt'))
    rows.append(('Wiki-One size: read raw files + process + save',
                 res['seconds'], res['peak_rss_mib'],
                 f"{s['num_entities']:,} entities, "
                 f"{s['num_background_triples']:,} background triples; "
                 f"data.pt {_mb(data_pt)}"))
    reloads = sorted((run('reload', raw, root) for _ in range(repeat)),
                     key=lambda r: r['seconds'])
    med = reloads[len(reloads) // 2]
    rows.append(('Wiki-One size: reload from processed', med['seconds'],
                 med['peak_rss_mib'],
                 f"median of {repeat}; min {reloads[0]['seconds']:.2f} s"))


def nell_rows(rows: List, args: argparse.Namespace, data: str, root: str,
              tmp: str, epochs: int) -> None:
    r"""NELL-One processing, reloading and pretraining; bundled UMLS-One."""
    from pyg_fewshot.data.pretrain import DEFAULT_BATCH_SIZE, DEFAULT_LR
    res = run('process', data, root)
    s = res['summary']
    rows.append(('NELL-One: read raw files + process + save',
                 res['seconds'], res['peak_rss_mib'],
                 f"{s['num_entities']:,} entities, "
                 f"{s['num_background_triples']:,} background triples"))
    reloads = [run('reload', data, root) for _ in range(args.repeat)]
    reloads.sort(key=lambda r: r['seconds'])
    med = reloads[len(reloads) // 2]
    rows.append(('NELL-One: reload from processed', med['seconds'],
                 med['peak_rss_mib'],
                 f"median of {args.repeat}; min "
                 f"{reloads[0]['seconds']:.2f} s"))
    umls_root = osp.join(tmp, 'umls-one')
    res = run('process', 'umls-one', umls_root)
    rows.append(('UMLS-One (bundled): process', res['seconds'],
                 res['peak_rss_mib'], ''))
    res = run('reload', 'umls-one', umls_root)
    rows.append(('UMLS-One (bundled): reload', res['seconds'],
                 res['peak_rss_mib'], ''))
    if not args.skip_pretrain:
        res = run('pretrain', data, root, epochs=epochs)
        rows.append((
            'NELL-One: TransE pretraining, defaults', res['seconds'],
            res['peak_rss_mib'],
            f'dim 100, {epochs} epochs, batch {DEFAULT_BATCH_SIZE}, '
            f'lr {DEFAULT_LR}, 1 thread; '
            f"{res['seconds'] / max(epochs, 1):.2f} s/epoch"))
    if args.synthetic_wiki:
        res = run('synthetic-wiki', data, root)
        s = res['summary']
        num_rel = (s['num_background_relations'] + s['num_train_relations'] +
                   s['num_dev_relations'] + s['num_test_relations'])
        rows.append(('make_synthetic at Wiki-One size', res['seconds'],
                     res['peak_rss_mib'],
                     f"{s['num_entities']:,} entities, "
                     f"{s['num_background_triples']:,} background, "
                     f"{num_rel} relations"))


if __name__ == '__main__':
    sys.exit(main())
