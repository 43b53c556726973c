#!/usr/bin/env python
r"""Builds the bundled UMLS-One few-shot dataset from the UMLS KG files
shipped inside the ``pykeen==1.11.1`` wheel.

Usage::

    python scripts/build_umls_one.py                      # downloads the wheel
    python scripts/build_umls_one.py --wheel /tmp/pk/pykeen-1.11.1-py3-none-any.whl
    python scripts/build_umls_one.py --out /some/folder   # default: the package

The wheel is only opened as a zip archive (pykeen is never installed or
imported). Its three UMLS files (``train.txt``, ``valid.txt``, ``test.txt``,
``head\trelation\ttail``) are checked against pinned SHA-256 digests and
concatenated in that order; this *file order* is the order of the triples
within each relation, in the task files and in ``path_graph``.

Output, in the standard few-shot layout, gzip-compressed (deterministic:
no timestamp in the gzip header, sorted JSON where order carries no meaning):

* ``train_tasks.json.gz`` / ``dev_tasks.json.gz`` / ``test_tasks.json.gz``:
  every triple of each task relation (relations in the order of
  :data:`SPLIT`);
* ``path_graph.gz``: every triple of the 5 background relations;
* ``ent2ids.gz``: the 135 entities, ids in sorted name order;
* ``relation2ids.gz``: background relations ``0..4`` (order of
  :data:`BACKGROUND`), their ``_inv`` ``5..9``;
* ``rel2candidates.json.gz``: every entity (id order) for every task relation;
* ``e1rel_e2.json.gz``: the true tails of every (head, task relation);
* ``MANIFEST.json``: source, digests, counts; ``LICENSE-PyKEEN.txt``: the
  licence of the distribution the files come from.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import os.path as osp
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from pyg_fewshot._io import atomic_path  # noqa: E402

PYKEEN_VERSION = '1.11.1'
WHEEL_NAME = f'pykeen-{PYKEEN_VERSION}-py3-none-any.whl'
MEMBER = 'pykeen/datasets/umls/{}.txt'
LICENSE_MEMBER = f'pykeen-{PYKEEN_VERSION}.dist-info/licenses/LICENSE'
SOURCE_FILES = ('train', 'valid', 'test')
SOURCE_SHA256 = {
    'train': '873ef4925516b83e7f6f8cc02b4be51d848828710a7f65a956f0ac4a9e452f35',
    'valid': '025c98f8a4891e2a6582ec5b40ee0d904031edad9c52554522f4b7904820c98e',
    'test': 'a7eb529a3d2810fcc96341ccc97c625a5e202f8389673aa6bd317eeebbb79014',
}

SPLIT: Dict[str, List[str]] = OrderedDict([
    ('train', [
        'associated_with', 'causes', 'complicates', 'disrupts', 'issue_in',
        'location_of', 'manifestation_of', 'measures', 'part_of', 'produces'
    ]),
    ('dev', [
        'assesses_effect_of', 'co-occurs_with', 'occurs_in', 'performs',
        'precedes'
    ]),
    ('test', [
        'analyzes', 'evaluation_of', 'measurement_of', 'treats', 'uses'
    ]),
])
BACKGROUND = ['affects', 'result_of', 'isa', 'interacts_with', 'process_of']

EXPECTED = {
    'num_entities': 135,
    'num_train_triples': 2453,
    'num_dev_triples': 385,
    'num_test_triples': 300,
    'num_background_triples': 2996,
}

DEFAULT_OUT = osp.join(ROOT, 'pyg_fewshot', 'data', 'bundled', 'umls_one')

Triple = Tuple[str, str, str]


def download_wheel(folder: str) -> str:
    r"""``pip download pykeen==1.11.1 --no-deps`` into ``folder``."""
    subprocess.run([
        sys.executable, '-m', 'pip', 'download', f'pykeen=={PYKEEN_VERSION}',
        '--no-deps', '--only-binary=:all:', '-d', folder
    ], check=True)
    path = osp.join(folder, WHEEL_NAME)
    if not osp.isfile(path):
        raise FileNotFoundError(f'pip did not produce {path}')
    return path


def read_source(wheel: str, verify: bool = True, member: str = MEMBER,
                sha256: Optional[Dict[str, str]] = None
                ) -> Tuple[List[Triple], Dict[str, str], str]:
    r"""The triples of the wheel in file order (train, valid, test), the
    SHA-256 of each file, and the licence text.

    ``member`` is the path pattern of the three files in the wheel (``{}``
    stands for ``train``, ``valid``, ``test``; default: the UMLS files) and
    ``sha256`` their expected digests (default: those of UMLS)."""
    sha256 = SOURCE_SHA256 if sha256 is None else sha256
    triples: List[Triple] = []
    digests = {}
    with zipfile.ZipFile(wheel) as zf:
        for part in SOURCE_FILES:
            raw = zf.read(member.format(part))
            digests[part] = hashlib.sha256(raw).hexdigest()
            if verify and digests[part] != sha256[part]:
                raise ValueError(
                    f'{wheel}: {member.format(part)} has SHA-256 '
                    f'{digests[part]}, expected {sha256[part]} '
                    f'(pykeen=={PYKEEN_VERSION}); pass --no-verify to build '
                    f'anyway')
            for i, line in enumerate(raw.decode('utf-8').splitlines()):
                if not line.strip():
                    continue
                fields = line.split('\t')
                if len(fields) != 3:
                    raise ValueError(f'{member.format(part)}, line {i + 1}: '
                                     f'expected 3 tab-separated fields')
                triples.append((fields[0], fields[1], fields[2]))
        try:
            licence = zf.read(LICENSE_MEMBER).decode('utf-8')
        except KeyError:
            licence = ''
    return triples, digests, licence


def build_files(triples: Sequence[Triple],
                split: Optional[Dict[str, List[str]]] = None,
                background: Optional[List[str]] = None
                ) -> Dict[str, bytes]:
    r"""The uncompressed content of every file of the layout."""
    split = SPLIT if split is None else split
    background = BACKGROUND if background is None else background
    task_rel = {r: s for s, rels in split.items() for r in rels}
    known = set(task_rel) | set(background)
    if len(known) != len(task_rel) + len(background):
        raise ValueError('a relation is in two splits or in a split and the '
                         'background')
    relations = {r for _, r, _ in triples}
    absent = sorted(known - relations)
    if absent:
        raise ValueError(f'split relations absent from the source: {absent}')
    if len(set(triples)) != len(triples):
        raise ValueError('the source holds duplicate triples')
    # Relations in no split and not background are left out entirely.
    triples = [t for t in triples if t[1] in known]

    entities = sorted({e for h, _, t in triples for e in (h, t)})
    by_rel: Dict[str, List[Triple]] = {r: [] for r in known}
    for trip in triples:  # file order within each relation
        by_rel[trip[1]].append(trip)

    def dumps(obj, sort_keys=False) -> bytes:
        return (json.dumps(obj, sort_keys=sort_keys, ensure_ascii=False,
                           separators=(',', ':')) + '\n').encode('utf-8')

    files: Dict[str, bytes] = {}
    for s, rels in split.items():
        files[f'{s}_tasks.json'] = dumps(
            OrderedDict((r, [list(t) for t in by_rel[r]]) for r in rels))
    files['path_graph'] = ''.join(
        f'{h}\t{r}\t{t}\n' for h, r, t in triples
        if r in background).encode('utf-8')
    files['ent2ids'] = dumps({e: i for i, e in enumerate(entities)},
                             sort_keys=True)
    rel2id = {r: i for i, r in enumerate(background)}
    rel2id.update({f'{r}_inv': i + len(background)
                   for i, r in enumerate(background)})
    files['relation2ids'] = dumps(rel2id)
    task_order = [r for rels in split.values() for r in rels]
    files['rel2candidates.json'] = dumps(
        OrderedDict((r, entities) for r in task_order))
    e1rel_e2: Dict[str, List[str]] = OrderedDict()
    for r in task_order:
        for h, _, t in by_rel[r]:
            e1rel_e2.setdefault(h + r, []).append(t)
    files['e1rel_e2.json'] = dumps(e1rel_e2)
    return files


def gzip_bytes(content: bytes) -> bytes:
    r"""Deterministic gzip (no name, zero timestamp)."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename='', mode='wb', fileobj=buf, mtime=0,
                       compresslevel=9) as f:
        f.write(content)
    return buf.getvalue()


def write(out: str, files: Dict[str, bytes], manifest: Dict,
          licence: str, compress: bool = True) -> List[str]:
    r"""Writes every file atomically (each one whole or not at all),
    gzip-compressed with a ``.gz`` suffix unless ``compress`` is false."""
    os.makedirs(out, exist_ok=True)
    written = []
    for name, content in files.items():
        path = osp.join(out, name + ('.gz' if compress else ''))
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                f.write(gzip_bytes(content) if compress else content)
        os.chmod(path, 0o644)
        written.append(path)
    extras = {'MANIFEST.json': (json.dumps(manifest, indent=2) + '\n')}
    if licence:
        extras['LICENSE-PyKEEN.txt'] = licence
    for name, text in extras.items():
        path = osp.join(out, name)
        with atomic_path(path) as tmp:
            with open(tmp, 'w', encoding='utf-8') as f:
                f.write(text)
        os.chmod(path, 0o644)
        written.append(path)
    return written


def build(wheel: str, out: str = DEFAULT_OUT, verify: bool = True,
          check_counts: bool = True) -> Dict:
    r"""Builds UMLS-One from ``wheel`` into ``out``; returns the manifest."""
    triples, digests, licence = read_source(wheel, verify=verify)
    files = build_files(triples)
    kept_rel = set(BACKGROUND) | {r for rels in SPLIT.values() for r in rels}
    kept = [t for t in triples if t[1] in kept_rel]
    counts = {
        'num_entities': len({e
                             for h, _, t in kept for e in (h, t)}),
        'num_background_relations': len(BACKGROUND),
        'num_background_triples': sum(r in BACKGROUND for _, r, _ in kept),
    }
    for s, rels in SPLIT.items():
        counts[f'num_{s}_relations'] = len(rels)
        counts[f'num_{s}_triples'] = sum(r in rels for _, r, _ in kept)
    counts['num_source_triples'] = len(triples)
    counts['num_source_triples_left_out'] = len(triples) - len(kept)
    counts['num_source_relations_left_out'] = len(
        {r for _, r, _ in triples} - kept_rel)
    if check_counts:
        bad = {k: (counts[k], v) for k, v in EXPECTED.items()
               if counts[k] != v}
        if bad:
            raise ValueError(f'counts differ from UMLS-One (got, expected): '
                             f'{bad}')
    manifest = {
        'name': 'umls-one',
        'source': {
            'distribution': f'pykeen=={PYKEEN_VERSION} (PyPI wheel '
            f'{WHEEL_NAME}), files pykeen/datasets/umls/'
            '{train,valid,test}.txt',
            'sha256': digests,
            'licence': 'MIT (PyKEEN); graph from Kok & Domingos (2007), '
            'built from the UMLS Semantic Network (McCray, 2003)',
        },
        'triple_order': 'file order of train.txt, valid.txt, test.txt '
        '(concatenated)',
        'entity_ids': 'sorted entity names',
        'split': SPLIT,
        'background_relations': BACKGROUND,
        'left_out': 'triples of the 21 relations in no split and not '
        'background',
        'candidates': 'every entity for every task relation',
        'counts': counts,
        'built_by': 'scripts/build_umls_one.py',
    }
    write(out, files, manifest, licence)
    return manifest


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--wheel', help=f'path of {WHEEL_NAME} (downloaded '
                        f'with pip when omitted)')
    parser.add_argument('--out', default=DEFAULT_OUT,
                        help='output folder (default: the package copy)')
    parser.add_argument('--no-verify', action='store_true',
                        help='skip the SHA-256 check of the source files')
    args = parser.parse_args(argv)
    if args.wheel:
        manifest = build(args.wheel, args.out, verify=not args.no_verify)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            manifest = build(download_wheel(tmp), args.out,
                             verify=not args.no_verify)
    print(json.dumps(manifest['counts'], indent=2))
    print(f'written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
