#!/usr/bin/env python
r"""Builds the Nations-One and Kinships-One few-shot datasets from the
Nations and Kinships KG files shipped inside the ``pykeen==1.11.1`` wheel.

Usage::

    python scripts/build_pykeen_one.py nations --out /data/nations-one
    python scripts/build_pykeen_one.py kinships --out /data/kinships-one \
        --wheel /tmp/pk/pykeen-1.11.1-py3-none-any.whl [--no-verify]

Without ``--wheel`` the wheel is downloaded with ``pip download
pykeen==1.11.1 --no-deps`` into a temporary folder. It is only opened as a
zip archive (pykeen is never installed or imported), as by
``scripts/build_umls_one.py``, whose functions this script uses. The three
files ``pykeen/datasets/<dataset>/{train,valid,test}.txt``
(``head\trelation\ttail``) are checked against pinned SHA-256 digests and
concatenated in that order; this *file order* is the order of the triples
within each relation, in the task files and in ``path_graph`` (so the
support set of a relation at evaluation is its first K triples in file
order).

Split rule (the same for both datasets; parameters in :data:`SPECS`):

1. A relation with fewer than ``min_task_triples`` (10) triples cannot be a
   few-shot task (K + 1 triples with K up to 5, plus queries): it goes to
   the background graph.
2. Of the other relations, the ``num_background`` largest (by triple
   count, ties by name) go to the background too, so that the background
   graph has substance (Nations 10, Kinships 5).
3. The remaining relations are the task relations. Sorted by name, they are
   put in the order of ``numpy.random.default_rng(0).permutation`` and cut
   into train / dev / test by the sizes of the spec (Nations 19 / 6 / 6,
   Kinships 10 / 4 / 4; dev and test hold at least 4 relations each).
   Within each split the relations are listed by name.

Every source triple is kept (a task triple or a background triple).

Output, in the standard few-shot layout, **uncompressed** (the published
MetaR / MoEMeta code cannot read ``.gz``), deterministic (sorted JSON where
order carries no meaning, no timestamp):

* ``train_tasks.json`` / ``dev_tasks.json`` / ``test_tasks.json``: every
  triple of each task relation;
* ``path_graph``: every triple of the background relations;
* ``ent2ids``: every entity, ids in sorted name order;
* ``relation2ids``: the background relations by name ``0..B-1``, their
  ``_inv`` ``B..2B-1``;
* ``rel2candidates.json``: every entity (id order) for every task relation;
* ``e1rel_e2.json``: the true tails of every (head, task relation);
* ``MANIFEST.json``: source, digests, rule, split, counts;
  ``LICENSE-PyKEEN.txt``: the licence of the distribution the files come
  from.

The build refuses a result on which the published MetaR / MoEMeta data
loader would loop forever (:func:`check_published_loader`): 10 entities or
fewer, or a (head, task relation) whose true tails are every entity.

The output folder must be given (``--out``); a non-empty one is refused
unless ``--overwrite``. The files are written into a temporary folder next
to it, then moved into place, each file atomically: a crash leaves no
half-written file (a new folder appears whole or not at all).
"""
import argparse
import json
import os
import os.path as osp
import shutil
import sys
import tempfile
from collections import Counter, OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

HERE = osp.dirname(osp.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import build_umls_one as umls  # noqa: E402

Triple = Tuple[str, str, str]

PYKEEN_VERSION = umls.PYKEEN_VERSION
WHEEL_NAME = umls.WHEEL_NAME
SPLITS = ('train', 'dev', 'test')
SEED = 0
MIN_TASK_TRIPLES = 10

SPECS: Dict[str, Dict] = {
    'nations': {
        'name': 'nations-one',
        'member': 'pykeen/datasets/nations/{}.txt',
        'sha256': {
            'train': '0830fa9da8e5bba2ccdaa45b7bdc9130451ba66b09ff2708f35f'
                     'ccaf82473e57',
            'valid': '2b337a62e51a2f45c283eac98a70d21b7e0e102136be1539b2a5'
                     '2c652a7b0530',
            'test': '3971085165b47b6aeaec68058c6d8d98b3005e929db81268410b'
                    '95ae4db770ab',
        },
        'min_task_triples': MIN_TASK_TRIPLES,
        'num_background': 10,
        'sizes': {'train': 19, 'dev': 6, 'test': 6},
        'seed': SEED,
        'origin': 'the Nations graph of Kok & Domingos (2007), from the '
        'Dimensionality of Nations project (Rummel, 1950-1965)',
        'expected': {
            'num_source_triples': 1992,
            'num_entities': 14,
            'num_background_relations': 24,
            'num_background_triples': 1029,
            'num_train_relations': 19,
            'num_train_triples': 545,
            'num_dev_relations': 6,
            'num_dev_triples': 205,
            'num_test_relations': 6,
            'num_test_triples': 213,
        },
    },
    'kinships': {
        'name': 'kinships-one',
        'member': 'pykeen/datasets/kinships/{}.txt',
        'sha256': {
            'train': '738612111a6acf0e39662bde24c7e72a4d1edf20931beea077da'
                     '367dda689731',
            'valid': 'c56f8630a583178b1e569f11a64aa535ae1ce0b0912d8b1e2471'
                     '6be2b37f04da',
            'test': '05e5733265761d55be9c05bfaff5a8d0808df46f9c1e9d66cc3f'
                    '2fe114e43d88',
        },
        'min_task_triples': MIN_TASK_TRIPLES,
        'num_background': 5,
        'sizes': {'train': 10, 'dev': 4, 'test': 4},
        'seed': SEED,
        'origin': 'the Kinships graph of Kok & Domingos (2007), from the '
        'Alyawarra kinship terms recorded by Denham (1973)',
        'expected': {
            'num_source_triples': 10686,
            'num_entities': 104,
            'num_background_relations': 7,
            'num_background_triples': 4568,
            'num_train_relations': 10,
            'num_train_triples': 3388,
            'num_dev_relations': 4,
            'num_dev_triples': 1258,
            'num_test_relations': 4,
            'num_test_triples': 1472,
        },
    },
}


def rule_text(spec: Dict) -> str:
    r"""The split rule in words, with the parameters of ``spec``."""
    sizes = spec['sizes']
    return (
        f"relations with fewer than {spec['min_task_triples']} triples go to "
        f"the background; of the others, the {spec['num_background']} "
        f"largest (by triple count, ties by name) go to the background too; "
        f"the remaining relations, sorted by name, are put in the order of "
        f"numpy.random.default_rng({spec['seed']}).permutation and cut into "
        f"train / dev / test of {sizes['train']} / {sizes['dev']} / "
        f"{sizes['test']} relations (listed by name within each split); "
        f"task triples keep the file order of train.txt, valid.txt, "
        f"test.txt")


def split_relations(triples: Sequence[Triple], min_task_triples: int,
                    num_background: int, sizes: Dict[str, int],
                    seed: int = SEED
                    ) -> Tuple[Dict[str, List[str]], List[str]]:
    r"""Applies the split rule: returns the task relations of each split
    (by name within a split) and the background relations (by name)."""
    counts = Counter(r for _, r, _ in triples)
    small = sorted(r for r, c in counts.items() if c < min_task_triples)
    eligible = sorted((r for r, c in counts.items() if c >= min_task_triples),
                      key=lambda r: (-counts[r], r))
    largest = eligible[:num_background]
    tasks = sorted(eligible[num_background:])
    if sum(sizes[s] for s in SPLITS) != len(tasks):
        raise ValueError(
            f'the rule leaves {len(tasks)} task relations, the split sizes '
            f'{dict((s, sizes[s]) for s in SPLITS)} add up to '
            f'{sum(sizes[s] for s in SPLITS)}')
    order = [tasks[i] for i in np.random.default_rng(seed).permutation(
        len(tasks)).tolist()]
    split: Dict[str, List[str]] = OrderedDict()
    start = 0
    for s in SPLITS:
        split[s] = sorted(order[start:start + sizes[s]])
        start += sizes[s]
    return split, sorted(small + largest)


def check_published_loader(triples: Sequence[Triple],
                           split: Dict[str, List[str]]) -> None:
    r"""Raises :class:`ValueError` where the published MetaR / MoEMeta data
    loader would loop forever on the layout: it skips a relation with at
    most 10 candidates (here every entity is a candidate of every task
    relation, so it would skip them all), and it draws a negative tail for
    a (head, relation) until one is neither a true tail nor the query's
    tail (there must be one)."""
    entities = {e for h, _, t in triples for e in (h, t)}
    if len(entities) <= 10:
        raise ValueError(f'{len(entities)} entities: the published loader '
                         f'needs more than 10 candidates per relation')
    task = {r for rels in split.values() for r in rels}
    tails: Dict[Tuple[str, str], set] = {}
    for h, r, t in triples:
        if r in task:
            tails.setdefault((h, r), set()).add(t)
    full = sorted(k for k, v in tails.items() if len(v) >= len(entities))
    if full:
        raise ValueError(f'(head, relation) pairs with every entity as a '
                         f'true tail leave no negative candidate: {full[:3]}')


def prepare_out(out: str, overwrite: bool) -> None:
    r"""Refuses an output path that is a file, or a non-empty folder unless
    ``overwrite``."""
    if osp.exists(out) and not osp.isdir(out):
        raise FileExistsError(f"'{out}' exists and is not a folder")
    if osp.isdir(out) and os.listdir(out) and not overwrite:
        raise FileExistsError(
            f"the output folder '{out}' is not empty; pass --overwrite "
            f"(overwrite=True) to replace the dataset files in it")


def write_folder(out: str, files: Dict[str, bytes], manifest: Dict,
                 licence: str, overwrite: bool = False) -> List[str]:
    r"""Writes the layout into a temporary folder next to ``out`` (each file
    atomically, uncompressed, by ``build_umls_one.write``), then moves it into
    place: a new or empty ``out`` is replaced by it in one rename; with
    ``overwrite`` the files are moved into an existing folder one by one
    (each move atomic; other files there are left alone)."""
    prepare_out(out, overwrite)
    out = osp.abspath(out)
    parent = osp.dirname(out)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.' + osp.basename(out) + '.',
                               suffix='.tmp', dir=parent)
    try:
        written = umls.write(staging, files, manifest, licence,
                             compress=False)
        names = [osp.basename(p) for p in written]
        if osp.isdir(out) and os.listdir(out):
            for name in names:
                os.replace(osp.join(staging, name), osp.join(out, name))
            os.rmdir(staging)
        else:
            os.chmod(staging, 0o755)
            os.replace(staging, out)  # onto an empty folder too (POSIX)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [osp.join(out, name) for name in names]


def build(dataset: str, wheel: str, out: str, verify: bool = True,
          overwrite: bool = False, spec: Optional[Dict] = None) -> Dict:
    r"""Builds ``<dataset>-one`` from ``wheel`` into ``out``; returns the
    manifest.

    Args:
        dataset (str): ``'nations'`` or ``'kinships'``.
        wheel (str): Path of the pykeen wheel (any zip holding the member
            files).
        out (str): Output folder (refused when not empty, unless
            ``overwrite``).
        verify (bool): Check the SHA-256 of the source files and the
            resulting counts against the pinned ones.
        overwrite (bool): Write into a non-empty folder.
        spec (dict, optional): Replaces ``SPECS[dataset]`` (tests).
    """
    if dataset not in SPECS and spec is None:
        raise ValueError(f"unknown dataset '{dataset}' (one of "
                         f"{sorted(SPECS)})")
    spec = SPECS[dataset] if spec is None else spec
    prepare_out(out, overwrite)  # before any work
    triples, digests, licence = umls.read_source(
        wheel, verify=verify, member=spec['member'], sha256=spec['sha256'])
    split, background = split_relations(
        triples, spec['min_task_triples'], spec['num_background'],
        spec['sizes'], spec['seed'])
    check_published_loader(triples, split)
    files = umls.build_files(triples, split=split, background=background)

    rel_counts = Counter(r for _, r, _ in triples)
    bg = set(background)
    counts: Dict[str, int] = {
        'num_source_triples': len(triples),
        'num_source_relations': len(rel_counts),
        'num_entities': len({e for h, _, t in triples for e in (h, t)}),
        'num_background_relations': len(background),
        'num_background_relations_small': sum(
            rel_counts[r] < spec['min_task_triples'] for r in background),
        'num_background_triples': sum(r in bg for _, r, _ in triples),
    }
    for s, rels in split.items():
        counts[f'num_{s}_relations'] = len(rels)
        counts[f'num_{s}_triples'] = sum(rel_counts[r] for r in rels)
    task_counts = [rel_counts[r] for rels in split.values() for r in rels]
    counts['min_task_relation_triples'] = min(task_counts)
    counts['max_task_relation_triples'] = max(task_counts)
    expected = spec.get('expected')
    if verify and expected:
        bad = {k: (counts[k], v) for k, v in expected.items()
               if counts[k] != v}
        if bad:
            raise ValueError(f"counts differ from {spec['name']} (got, "
                             f"expected): {bad}")
    members = spec['member'].format('{train,valid,test}')
    manifest = {
        'name': spec['name'],
        'source': {
            'distribution': f'pykeen=={PYKEEN_VERSION} (PyPI wheel '
            f'{WHEEL_NAME}), files {members}',
            'sha256': digests,
            'licence': 'MIT (PyKEEN); ' + spec['origin'],
        },
        'triple_order': 'file order of train.txt, valid.txt, test.txt '
        '(concatenated); the support set of a relation is its first K '
        'triples',
        'entity_ids': 'sorted entity names',
        'rule': rule_text(spec),
        'rule_parameters': {
            'min_task_triples': spec['min_task_triples'],
            'num_background': spec['num_background'],
            'seed': spec['seed'],
            'sizes': {s: spec['sizes'][s] for s in SPLITS},
        },
        'split': split,
        'background_relations': background,
        'relation_triples': dict(sorted(rel_counts.items())),
        'candidates': 'every entity for every task relation',
        'counts': counts,
        'built_by': 'scripts/build_pykeen_one.py',
    }
    write_folder(out, files, manifest, licence, overwrite=overwrite)
    return manifest


def summary_line(manifest: Dict, out: str) -> str:
    c = manifest['counts']
    rels = '/'.join(str(c[f'num_{s}_relations']) for s in SPLITS)
    trip = '/'.join(f"{c[f'num_{s}_triples']:,}" for s in SPLITS)
    return (f"{manifest['name']}: {c['num_entities']:,} entities, "
            f"task relations train/dev/test {rels}, triples {trip}, "
            f"background {c['num_background_relations']} relations "
            f"{c['num_background_triples']:,} triples -> {out}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('dataset', choices=sorted(SPECS))
    parser.add_argument('--out', required=True,
                        help='output folder (must be empty or absent, '
                        'unless --overwrite)')
    parser.add_argument('--wheel', help=f'path of {WHEEL_NAME} (downloaded '
                        f'with pip when omitted)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the SHA-256 and count checks')
    parser.add_argument('--overwrite', action='store_true',
                        help='write into a non-empty output folder')
    args = parser.parse_args(argv)
    try:
        prepare_out(args.out, args.overwrite)
    except FileExistsError as e:
        parser.error(str(e))
    kw = dict(verify=not args.no_verify, overwrite=args.overwrite)
    if args.wheel:
        manifest = build(args.dataset, args.wheel, args.out, **kw)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(args.dataset, umls.download_wheel(tmp),
                             args.out, **kw)
    print(summary_line(manifest, args.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
