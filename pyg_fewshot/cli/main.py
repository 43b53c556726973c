r"""``pyg-fewshot``: train, evaluate and pretrain from the command line.

The CLI is the top layer: it wires data, models, the meta-learning engine
and the evaluator together and never holds model logic itself.
"""
import argparse
import ast
import errno
import importlib
import inspect
import json
import math
import os
import sys
import time
import types
import typing
from collections.abc import Sequence
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch

from .. import __version__
from .._io import atomic_write_json
from ..data import (SPLITS, EpisodeSampler, FewShotDataError, check_shots,
                    load_dataset, split_relations)
from ..evaluation import chance_level, evaluate
from ..meta import MetaLearner, MetaTrainer, load_checkpoint
from ..meta import distributed as dist_utils
from ..models import MODELS, build_model

DEFAULT_DATASET = 'umls-one'


def _parse_kv(items: List[str]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for item in items:
        if '=' not in item:
            raise SystemExit(f"error: --model-arg expects KEY=VALUE, got "
                             f"'{item}'")
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _inner_lr(text: str) -> Union[float, Dict[str, float]]:
    if '=' not in text:
        return float(text)
    steps = {}
    for item in text.split(','):
        key, _, value = item.partition('=')
        try:
            steps[key.strip()] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"'{item}' in '{text}': expected KEY=NUMBER") from None
    return steps


def _device(name: str) -> torch.device:
    if name == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('error: --device cuda but no CUDA device is '
                         'available')
    return torch.device(name)


def _load_data(args: argparse.Namespace, pretrain: bool, dim: int):
    dataset = load_dataset(args.dataset, root=args.data_root)
    data = dataset[0]
    if pretrain:
        ent, rel = dataset.pretrained_embeddings(dim=dim)
        # One global scale to a mean L2 row norm of 1 keeps TransE's
        # geometry (h + r = t) exactly, and puts the vectors on the scale the
        # margin (1) and learning rate (1e-3) of the meta-learners assume.
        scale = 1.0 / ent.norm(dim=1).mean().clamp(min=1e-12)
        data['entity'].emb = ent * scale
        data.relation_emb = rel * scale
    return dataset, data


def _attach_modalities(dataset, data, text: bool,
                       text_model: Optional[str],
                       modality_dir: Optional[str]) -> None:
    """Adds modality features (FusionAdapter): .npy matrices from a folder
    and/or the text modality encoded from entity names (cached)."""
    if modality_dir:
        from ..data import attach_modalities
        attach_modalities(data, modality_dir)
    if text and 'x_text' not in data['entity']:
        from ..data import text_features
        text_features(data, dataset.processed_dir, model=text_model)


def _metrics_view(res: Dict[str, Any]) -> Dict[str, Any]:
    keys = ('mrr', 'hits@1', 'hits@5', 'hits@10', 'mean_rank',
            'num_queries', 'num_relations', 'macro', 'per_relation',
            'ties_policy', 'candidate_set', 'nonfinite_scores', 'seconds')
    return {k: res[k] for k in keys if k in res}


def _print_metrics(name: str, res: Dict[str, Any]) -> None:
    print(f"{name}: MRR {res['mrr']:.4f}  Hits@1 {res['hits@1']:.4f}  "
          f"Hits@5 {res['hits@5']:.4f}  Hits@10 {res['hits@10']:.4f}  "
          f"({res['num_queries']} queries, macro MRR "
          f"{res['macro']['mrr']:.4f})")


def cmd_train(args: argparse.Namespace) -> Dict[str, Any]:
    if args.nproc < 1:
        raise SystemExit(f'error: --nproc must be at least 1 (got '
                         f'{args.nproc})')
    if args.nproc > 1 and not dist_utils.launched_by_torchrun():
        try:
            dist_utils.split_batch_size(args.batch_size, args.nproc)
        except ValueError as e:
            raise SystemExit(f'error: --batch-size: {e}') from None
        _device(args.device)
        # Rank 0 takes the run folder's lock; failing here first is quicker
        # and clearer than a failing worker.
        from .._io import run_lock
        with run_lock(args.output):
            pass
        dist_utils.launch(_train_worker, args.nproc, (args, ))
        with open(os.path.join(args.output, 'results.json')) as f:
            return json.load(f)
    try:
        # One writer per run folder, from the first check to results.json.
        with dist_utils.writer_lock(args.output):
            return _train(args)
    finally:
        dist_utils.cleanup()


def _train_worker(args: argparse.Namespace) -> None:
    try:
        with dist_utils.writer_lock(args.output):
            _train(args)
    finally:
        dist_utils.cleanup()


def _train(args: argparse.Namespace) -> Dict[str, Any]:
    _device(args.device)
    rank, world, device = dist_utils.init_distributed(device=args.device)
    main_process = rank == 0
    torch.manual_seed(args.seed)
    model_kwargs = _parse_kv(args.model_arg)
    if args.dim is not None:
        model_kwargs['embedding_dim'] = args.dim
    dim = model_kwargs.get('embedding_dim', 100)
    # Rank 0 processes and pretrains once; the others then read its cache.
    if not main_process:
        dist_utils.barrier()
    dataset, data = _load_data(args, args.pretrain, dim)
    if getattr(args, 'background_tasks', False):  # dev/test stay unchanged
        from ..data import BackgroundTasks
        data = BackgroundTasks()(data)
    if main_process and world > 1:
        dist_utils.barrier()
    _check_splits(data, args.shots)
    is_fusion = args.model == 'fusionadapter'
    text = is_fusion if args.text is None else args.text
    _attach_modalities(dataset, data, text, args.text_model,
                       args.modality_dir)
    if is_fusion:
        for key in ('backbone', 'tta_steps', 'tta_lr'):
            if getattr(args, key) is not None:
                model_kwargs[key] = getattr(args, key)
    model = build_model(args.model, data, **model_kwargs).to(device)
    learner_kwargs = dict(inner_steps=args.inner_steps,
                          inner_lr=args.inner_lr, margin=args.margin,
                          first_order=not args.second_order,
                          published_quirks=args.published_quirks)
    learner = MetaLearner(model, **learner_kwargs)

    # Each rank draws its share of the meta-batch from its own stream, and
    # its own dropout masks (the replicas still start from rank 0's weights).
    sampler = EpisodeSampler(
        data, args.shots, args.num_queries,
        dist_utils.split_batch_size(args.batch_size, world), 'train',
        seed=dist_utils.rank_seed(args.seed, rank))
    if world > 1:
        torch.manual_seed(dist_utils.rank_seed(args.seed, rank))
    distributed = world > 1

    def validate() -> float:
        return evaluate(model, data, 'dev', args.shots, learner,
                        ties_policy=args.ties, seed=args.seed,
                        distributed=distributed)['mrr']

    metadata = dict(model=model.model_name, model_kwargs=model_kwargs,
                    learner=learner_kwargs, dataset=args.dataset,
                    shots=args.shots, seed=args.seed,
                    pretrain=args.pretrain, text=text,
                    background_tasks=getattr(args, 'background_tasks', False),
                    text_model=args.text_model,
                    modality_dir=args.modality_dir, nproc=world,
                    batch_size=args.batch_size, version=__version__)
    # Every setting that changes what training computes: a run resumes
    # only under an equal one (the trainer adds the data fingerprint).
    # Not --max-steps (raising it extends a run), nor the device, output,
    # cache folder, or display options.
    config = dict(model=model.model_name, model_kwargs=model_kwargs,
                  learner=learner_kwargs, dataset=args.dataset,
                  shots=args.shots, seed=args.seed, nproc=world,
                  batch_size=args.batch_size, num_queries=args.num_queries,
                  lr=args.lr, entity_lr=args.entity_lr,
                  grad_clip=args.grad_clip, eval_every=args.eval_every,
                  patience=args.patience, amp=args.amp, ties=args.ties,
                  pretrain=args.pretrain, text=text,
                  text_model=args.text_model,
                  modality_dir=args.modality_dir,
                  background_tasks=metadata['background_tasks'],
                  published_eval_mode=args.published_eval_mode)
    trainer = MetaTrainer(learner, sampler, args.output, validate=validate,
                          lr=args.lr, max_steps=args.max_steps,
                          eval_every=args.eval_every, patience=args.patience,
                          grad_clip=args.grad_clip, amp=args.amp,
                          sparse_lr=args.entity_lr, metadata=metadata,
                          config=config,
                          keep_eval_mode=args.published_eval_mode,
                          progress=not args.quiet)
    summary = trainer.fit(resume=not args.no_resume)
    trainer.load_best()
    dev = evaluate(model, data, 'dev', args.shots, learner,
                   ties_policy=args.ties, seed=args.seed,
                   distributed=distributed)
    test = evaluate(model, data, 'test', args.shots, learner,
                    ties_policy=args.ties, seed=args.seed,
                    distributed=distributed)
    if not main_process:
        return {'dev': _metrics_view(dev), 'test': _metrics_view(test)}
    results = dict(
        model=model.model_name, dataset=args.dataset, shots=args.shots,
        seed=args.seed, steps=summary['steps'],
        best_step=summary['best_step'],
        train_seconds=round(summary['train_seconds'], 2),
        stopped_early=summary['stopped_early'], dev=_metrics_view(dev),
        test=_metrics_view(test),
        test_random_baseline=chance_level(data, 'test', args.shots),
        model_kwargs=model_kwargs, learner=learner_kwargs,
        batch_size=args.batch_size, num_queries=args.num_queries, nproc=world,
        lr=args.lr, entity_lr=args.entity_lr,
        pretrain=args.pretrain, history=summary['history'],
        threads=torch.get_num_threads(), version=__version__,
        data_fingerprint=trainer.config.get('data_fingerprint'),
        config=trainer.config)
    atomic_write_json(results, os.path.join(args.output, 'results.json'))
    _print_metrics('dev ', dev)
    _print_metrics('test', test)
    base = results['test_random_baseline']
    print(f"test random-scoring baseline: MRR {base['mrr']:.4f}  "
          f"Hits@10 {base['hits@10']:.4f}")
    print(f"results written to {os.path.join(args.output, 'results.json')}")
    return results


def cmd_evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    model, data, meta = _load_run(args)
    shots = meta['shots'] if args.shots is None else args.shots
    _check_splits(data, shots, (args.split, ), use='to evaluate')
    learner = MetaLearner(model, **meta['learner'])
    if hasattr(model, 'tta_learner'):
        model.tta_learner = learner
    res = evaluate(model, data, args.split, shots, learner,
                   ties_policy=args.ties, candidate_set=args.candidates,
                   seed=meta.get('seed', 0))
    _print_metrics(args.split, res)
    if args.output:
        atomic_write_json(_metrics_view(res), args.output)
    return res


def _load_run(args: argparse.Namespace):
    """Rebuilds the model of a saved run (its best checkpoint)."""
    path = args.checkpoint
    if os.path.isdir(path):
        path = os.path.join(path, 'best.pt')
    state = load_checkpoint(path)
    meta = state['metadata']
    args.dataset = args.dataset or meta['dataset']
    model_kwargs = dict(meta['model_kwargs'])
    dataset, data = _load_data(args, False,
                               model_kwargs.get('embedding_dim', 100))
    if meta.get('background_tasks'):  # the trained KG (dev/test unchanged)
        from ..data import BackgroundTasks
        data = BackgroundTasks()(data)
    # Another KG (even the same one with renumbered entities) would load
    # and score, just meaninglessly: refuse it.
    from ..data.fingerprint import data_fingerprint
    from ..meta.checkpoint import check_data
    check_data(state, data_fingerprint(data), path)
    _attach_modalities(dataset, data, meta.get('text', False),
                       meta.get('text_model'), meta.get('modality_dir'))
    model = build_model(meta['model'], data, pretrained=False,
                        **model_kwargs)
    model.load_state_dict(state['model_state'])
    return model.to(_device(args.device)), data, meta


def cmd_experts(args: argparse.Namespace) -> Dict[str, Any]:
    from ..evaluation.experts import (expert_activations,
                                      plot_activation_heatmap)
    if not args.no_plot:
        # Before any work, so that no experts.json is left without its plot.
        _require_matplotlib()
    model, data, meta = _load_run(args)
    analysis = expert_activations(model, data, splits=args.splits,
                                  shots=args.shots)
    stats = analysis['statistics']
    out_dir = args.output or (args.checkpoint if os.path.isdir(
        args.checkpoint) else os.path.dirname(args.checkpoint))
    report = {
        'relations': analysis['relations'], 'splits': analysis['splits'],
        'activation': analysis['activation'].tolist(),
        'pairs': analysis['pairs'].tolist(),
        'load': analysis['load'].tolist(), 'statistics': stats}
    atomic_write_json(report, os.path.join(out_dir, 'experts.json'))
    print(f"expert load: normalised entropy {stats['normalized_entropy']:.3f}"
          f", {stats['effective_experts']:.1f} effective experts "
          f"({stats['experts_used']}/{stats['num_experts']} used, largest "
          f"share {stats['max_share']:.3f}); relation specificity "
          f"{stats['relation_specificity']:.3f}; collapsed: "
          f"{stats['collapsed']}")
    if not args.no_plot:
        png = os.path.join(out_dir, 'experts.png')
        plot_activation_heatmap(analysis, png, title=(
            f"{meta['model']} on {meta['dataset']}, {meta['shots']}-shot"))
        print(f'heatmap written to {png}')
    return report


def cmd_pretrain(args: argparse.Namespace) -> None:
    dataset = load_dataset(args.dataset, root=args.data_root)
    t0 = time.perf_counter()
    kwargs = {} if args.epochs is None else {'epochs': args.epochs}
    ent, rel = dataset.pretrained_embeddings(dim=args.dim, **kwargs)
    print(f'TransE vectors: entities {tuple(ent.shape)}, relations '
          f'{tuple(rel.shape)} ({time.perf_counter() - t0:.1f} s, cached in '
          f'{dataset.processed_dir})')


# Option checks -------------------------------------------------------------
# argparse ``type=`` functions: argparse names the option in front of their
# message ("argument --eval-every: must be a positive integer, got 0").


def _number(text: str, cast: Callable[[str], Any], what: str,
            ok: Callable[[Any], bool]) -> Any:
    try:
        value = cast(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'must be {what}, got {text!r}') from None
    # NaN fails every comparison and an infinite rate or norm makes every
    # update non-finite: both are out of range.
    if not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f'must be {what}, got {text}')
    return value


def positive_int(text: str) -> int:
    r"""An :mod:`argparse` type: an integer :math:`\geq 1`."""
    return _number(text, int, 'a positive integer', lambda v: v > 0)


def non_negative_int(text: str) -> int:
    r"""An :mod:`argparse` type: an integer :math:`\geq 0`."""
    return _number(text, int, 'a non-negative integer', lambda v: v >= 0)


def positive_float(text: str) -> float:
    r"""An :mod:`argparse` type: a finite number :math:`> 0`."""
    return _number(text, float, 'a positive number', lambda v: v > 0)


def non_negative_float(text: str) -> float:
    r"""An :mod:`argparse` type: a finite number :math:`\geq 0`."""
    return _number(text, float, 'a non-negative number', lambda v: v >= 0)


def _inner_lr_option(text: str) -> Union[float, Dict[str, float]]:
    r"""``--inner-lr``: :func:`_inner_lr` with every step size finite and
    non-negative (a negative step ascends the support loss)."""
    try:
        value = _inner_lr(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'must be a number or KEY=NUMBER pairs, got {text!r}') from None
    steps = value.values() if isinstance(value, dict) else [value]
    if not all(0 <= step < math.inf for step in steps):
        raise argparse.ArgumentTypeError(
            f'step sizes must be non-negative numbers, got {text}')
    return value


def _key_value(text: str) -> str:
    r"""``--model-arg``: the ``KEY=VALUE`` form only; the value is checked
    against the model by :func:`_check_model_args` once ``--model`` is
    known."""
    if not text.partition('=')[0] or '=' not in text:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    return text


#: Constructor arguments that the data (or the wrapper) fills in; they are
#: not ``--model-arg`` settings.
_DATA_ARGS = frozenset({'num_entities', 'num_relations', 'pretrained',
                        'pretrained_relations', 'graph', 'backbone',
                        'features', 'masks'})


def _arguments(fn: Callable, skip: Any) -> Dict[str, Any]:
    r"""``{name: (annotation, default)}`` of the keyword arguments of
    ``fn`` outside ``skip``, annotations resolved."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation this Python cannot evaluate
        hints = {}
    return {
        p.name: (hints.get(p.name, p.annotation), p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in skip
    }


def _model_arguments(name: str, backbone: Optional[str]) -> Dict[str, Any]:
    r"""What ``--model-arg`` may set for model ``name``: the arguments of
    its constructor and :meth:`from_data`, and for a wrapper
    (:class:`~pyg_fewshot.models.FusionAdapter`) those of ``backbone``."""
    cls = MODELS[name]
    args = _arguments(cls.__init__, _DATA_ARGS | {'self'})
    args.update(_arguments(cls.from_data, {'data', 'pretrained'}))
    if 'backbone' in args:
        key = str(backbone or args['backbone'][1]).lower().replace(
            '-', '').replace('_', '')
        if key in MODELS and key != name:
            # The wrapper passes every argument it does not take itself on.
            args = {**_arguments(MODELS[key].__init__, _DATA_ARGS | {'self'}),
                    **args}
    return args


def _plural(what: str) -> str:
    return what.split(' ', 1)[1] + 's' if what.startswith('a ') else what


def _value_rule(key: str, annotation: Any,
                default: Any) -> Tuple[Callable[[Any], bool], str]:
    r"""A test of a model argument's value and its description, from the
    annotation (else the default's type). Numbers are non-negative; sizes
    (integers with a non-zero default, other than step counts and seeds)
    positive; dropout rates in :math:`[0, 1)`."""
    if annotation is inspect.Parameter.empty:
        annotation = (Any if default in (None, inspect.Parameter.empty) else
                      type(default))

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v: Any) -> bool:
        return ((is_int(v) or isinstance(v, float)) and math.isfinite(v))

    if annotation is bool:
        return (lambda v: isinstance(v, bool)), 'True or False'
    if annotation is int:
        if key.endswith(('_steps', 'seed')) or default == 0:
            return (lambda v: is_int(v) and v >= 0), 'a non-negative integer'
        return (lambda v: is_int(v) and v > 0), 'a positive integer'
    if annotation is float:
        if 'dropout' in key:
            return (lambda v: is_number(v) and 0 <= v < 1), \
                'a number in [0, 1)'
        return (lambda v: is_number(v) and v >= 0), 'a non-negative number'
    if annotation is str:
        return (lambda v: isinstance(v, str)), 'a string'
    if typing.get_origin(annotation) in (list, tuple, Sequence):
        item_ok, item = _value_rule(key, (typing.get_args(annotation) or
                                          (Any, ))[0], None)
        return (lambda v: isinstance(v, (list, tuple)) and all(
            item_ok(x) for x in v)), f'a tuple of {_plural(item)}'
    return (lambda v: True), 'anything'


def _check_model_value(key: str, value: Any, annotation: Any,
                       default: Any) -> None:
    optional = False
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        optional = len(rest) < len(args)
        annotation = rest[0] if len(rest) == 1 else Any
    ok, what = _value_rule(key, annotation, default)
    if not (ok(value) or (optional and value is None)):
        raise ValueError(f"argument --model-arg: {key} must be {what}"
                         f"{' or None' if optional else ''}, got {value!r}")


def _check_model_args(args: argparse.Namespace) -> None:
    r"""Checks the ``--model-arg`` settings of ``train`` against the model's
    arguments before any data is loaded: an unknown key, or a value of the
    wrong type or sign, raises :class:`ValueError` naming ``--model-arg``
    (a bad value would otherwise fail deep inside torch, *e.g.*
    ``embedding_dim=abc`` in ``torch.empty()``)."""
    kwargs = _parse_kv(args.model_arg)
    known = _model_arguments(args.model, kwargs.get('backbone',
                                                    args.backbone))
    for key, value in kwargs.items():
        if key not in known:
            raise ValueError(
                f"argument --model-arg: {args.model} has no argument "
                f"'{key}'; known: {', '.join(sorted(known))}")
        _check_model_value(key, value, *known[key])


# Data checks ---------------------------------------------------------------

#: What each split is needed for, in the message of an empty split.
_SPLIT_USE = {'train': 'to meta-train on',
              'dev': 'to pick the best checkpoint on',
              'test': 'to report test metrics on'}


def _check_splits(data: Any, shots: int, splits: Sequence = SPLITS,
                  use: Optional[str] = None) -> None:
    r"""Raises :class:`~pyg_fewshot.data.FewShotDataError` if one of
    ``splits`` has no task relations, or a relation with fewer than
    ``shots + 1`` triples (:func:`~pyg_fewshot.data.check_shots`), so that
    the data is rejected before training or evaluation starts instead of
    after it."""
    for split in splits:
        if split_relations(data, split).numel() == 0:
            raise FewShotDataError(
                f"The {split} split has no task relations ({split}_tasks."
                f"json is empty); at least one is needed "
                f"{use or _SPLIT_USE[split]}")
    check_shots(data, shots, splits)


def _require_matplotlib() -> None:
    r"""Fails before any work if the heatmap cannot be drawn."""
    try:
        importlib.import_module('matplotlib')
    except ImportError as e:
        raise ImportError("the heatmap needs matplotlib: pip install "
                          "'pyg_fewshot[plot]', or pass --no-plot") from e


# Error reporting -----------------------------------------------------------

#: Errors of file access the user can act on, even without a file name.
_FILE_ERRNOS = frozenset(
    getattr(errno, name) for name in
    ('ENOENT', 'EEXIST', 'EISDIR', 'ENOTDIR', 'EACCES', 'EPERM', 'ENOSPC',
     'EDQUOT', 'EROFS', 'ENAMETOOLONG', 'ELOOP') if hasattr(errno, name))


def _is_user_error(e: BaseException) -> bool:
    r"""Whether ``e`` is the user's to fix (bad data or option, a file that
    cannot be read or written, a missing optional package, a diverged run)
    rather than a bug, whose traceback is needed."""
    if isinstance(e, (ValueError, FloatingPointError)):
        return True
    if isinstance(e, ImportError):
        # A missing optional package is the user's to install; a failing
        # import of this package itself is a bug.
        cause: Optional[BaseException] = e
        while isinstance(cause, ImportError):
            if (cause.name or '').split('.')[0] == __package__.split('.')[0]:
                return False
            cause = cause.__cause__
        return True
    if isinstance(e, OSError):
        return (isinstance(e, (FileNotFoundError, FileExistsError,
                               PermissionError, IsADirectoryError,
                               NotADirectoryError))
                or e.filename is not None or e.errno in _FILE_ERRNOS)
    return False


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror and e.filename is not None:
        text = f"{e.strerror}: '{e.filename}'"
    else:
        text = str(e) or type(e).__name__
    return ' '.join(text.split())


def _debug_env() -> bool:
    return os.environ.get('PYG_FEWSHOT_DEBUG', '').strip().lower() not in (
        '', '0', 'false', 'no', 'off')


_DEBUG_HELP = ('show the Python traceback of an error instead of one line '
               '(also: PYG_FEWSHOT_DEBUG=1)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-fewshot',
        description='Few-shot relational learning on knowledge graphs.')
    parser.add_argument('--version', action='version', version=__version__)
    parser.add_argument('--debug', action='store_true', help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest='command', required=True)

    def data_args(p: argparse.ArgumentParser, default: Optional[str]) -> None:
        p.add_argument('--dataset', default=default,
                       help="'umls-one' (bundled) or a folder in the "
                       'standard few-shot layout')
        p.add_argument('--data-root', default=None,
                       help='where processed data is cached (default: '
                       '$PYG_FEWSHOT_HOME or ~/.cache/pyg_fewshot)')
        p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                       help='device to run on (default: cpu)')

    p = sub.add_parser('train', help='meta-train a model, then evaluate it')
    p.add_argument('--model', required=True, choices=sorted(MODELS),
                   help='model to train')
    data_args(p, DEFAULT_DATASET)
    p.add_argument('--shots', type=positive_int, default=1,
                   help='support triples K per task (default: 1)')
    p.add_argument('--seed', type=non_negative_int, default=0,
                   help='random seed (default: 0)')
    p.add_argument('--max-steps', type=positive_int, default=1000,
                   help='meta-training steps (default: 1000)')
    p.add_argument('--batch-size', type=positive_int, default=1024,
                   help='tasks per meta-batch (default: 1024)')
    p.add_argument('--num-queries', type=positive_int, default=3,
                   help='query triples per training task (default: 3)')
    p.add_argument('--eval-every', type=positive_int, default=200,
                   help='steps between dev validations (default: 200)')
    p.add_argument('--patience', type=positive_int, default=30,
                   help='validations without improvement before stopping '
                   '(default: 30)')
    p.add_argument('--lr', type=positive_float, default=1e-3,
                   help='learning rate (default: 1e-3)')
    p.add_argument('--entity-lr', type=non_negative_float, default=None,
                   help='learning rate of the entity table (default: --lr; '
                   '0 freezes it, e.g. to keep pretrained vectors)')
    p.add_argument('--grad-clip', type=positive_float, default=None,
                   help='max gradient norm of the dense parameters '
                   '(default: no clipping)')
    p.add_argument('--dim', type=positive_int, default=None,
                   help='embedding size (default: the model default, or '
                   'that of the pretrained vectors)')
    p.add_argument('--pretrain', action='store_true',
                   help='start from TransE vectors pretrained on the '
                   'background graph (computed once, then cached)')
    p.add_argument('--background-tasks', action='store_true',
                   help='also meta-train on every background relation with '
                   'more than 10 triples and 10 candidates (MetaR\'s '
                   'In-Train; with --pretrain, the hybrid)')
    p.add_argument('--inner-steps', type=non_negative_int, default=1,
                   help='inner-loop (support) steps per task; 0 adapts '
                   'nothing (default: 1)')
    p.add_argument('--inner-lr', type=_inner_lr_option, default=None,
                   help='inner step size beta (default: the model\'s, 5.0 '
                   'for MetaR and FusionAdapter, 0.05 for MoEMeta), or one '
                   'per local parameter: rel=5,*=0.05')
    p.add_argument('--margin', type=non_negative_float, default=1.0,
                   help='margin of the ranking loss (default: 1.0)')
    p.add_argument('--second-order', action='store_true',
                   help='differentiate through the inner steps (exact '
                   'second-order meta-gradients)')
    p.add_argument('--published-quirks', action='store_true',
                   help="reproduce the published code's inner step scaled "
                   'by 1/B and support-loss gradient leak')
    p.add_argument('--published-eval-mode', action='store_true',
                   help="reproduce the published code's third quirk: after "
                   'the first validation, training goes on in evaluation '
                   'mode (no dropout, frozen batch norm)')
    p.add_argument('--ties', default='mean',
                   choices=['mean', 'optimistic', 'pessimistic', 'expected'],
                   help='rank of the true tail among equal scores '
                   '(default: mean)')
    p.add_argument('--amp', action='store_true',
                   help='mixed precision (bfloat16 autocast)')
    p.add_argument('--model-arg', action='append', default=[],
                   type=_key_value, metavar='KEY=VALUE',
                   help='extra model argument, checked against the '
                   "model's constructor (repeatable), e.g. "
                   'hidden_channels=(500,200)')
    g = p.add_argument_group('FusionAdapter / modalities')
    g.add_argument('--text', dest='text', action='store_true', default=None,
                   help='encode entity names as a text modality (default: '
                   'on for fusionadapter); needs pyg_fewshot[text]')
    g.add_argument('--no-text', dest='text', action='store_false')
    g.add_argument('--text-model', default=None,
                   help='sentence-transformers model folder (default: the '
                   'offline all-MiniLM-L6-v2 package)')
    g.add_argument('--modality-dir', default=None,
                   help='folder with <name>_features.npy matrices')
    g.add_argument('--backbone', default=None, choices=['metar', 'moemeta'],
                   help='model FusionAdapter wraps (default: metar)')
    g.add_argument('--tta-steps', type=non_negative_int, default=None,
                   help='adapter-only tuning steps per test relation')
    g.add_argument('--tta-lr', type=positive_float, default=None,
                   help='learning rate of that tuning')
    p.add_argument('--nproc', type=positive_int, default=1,
                   help='data-parallel processes on this machine (gloo on '
                   'CPU, NCCL with --device cuda); --batch-size is the '
                   'global meta-batch, split evenly. Under torchrun, leave '
                   'it at 1: the job size comes from torchrun')
    p.add_argument('--output', default='runs/latest',
                   help='run folder (checkpoints, results.json)')
    p.add_argument('--no-resume', action='store_true',
                   help="start afresh even if the run folder has a "
                   "'last.pt'")
    p.add_argument('--quiet', action='store_true',
                   help='no progress bar')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='re-evaluate a saved run')
    p.add_argument('--checkpoint', required=True,
                   help='run folder (uses best.pt) or checkpoint file')
    data_args(p, None)
    p.add_argument('--split', default='test', choices=['dev', 'test'],
                   help='split to evaluate (default: test)')
    p.add_argument('--shots', type=positive_int, default=None,
                   help="support triples K (default: the run's)")
    p.add_argument('--ties', default='mean',
                   choices=['mean', 'optimistic', 'pessimistic', 'expected'],
                   help='rank of the true tail among equal scores '
                   '(default: mean)')
    p.add_argument('--candidates', default='relation',
                   choices=['relation', 'all'],
                   help="rank among the relation's candidates or all "
                   'entities (default: relation)')
    p.add_argument('--output', default=None, help='write metrics JSON here')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('experts', help='relation x expert activation '
                       'heatmap and expert-load statistics of a MoEMeta run')
    p.add_argument('--checkpoint', required=True,
                   help='run folder (uses best.pt) or checkpoint file')
    data_args(p, None)
    p.add_argument('--splits', nargs='+', default=['train', 'dev', 'test'],
                   choices=['train', 'dev', 'test'],
                   help='splits whose relations are routed (default: all)')
    p.add_argument('--shots', type=positive_int, default=None,
                   help='route only the first K triples of each relation '
                   '(default: all)')
    p.add_argument('--output', default=None,
                   help='folder for experts.json / experts.png (default: '
                   'the run folder)')
    p.add_argument('--no-plot', action='store_true',
                   help='skip experts.png (no matplotlib needed)')
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser('pretrain', help='pretrain TransE vectors on the '
                       'background graph')
    data_args(p, DEFAULT_DATASET)
    p.add_argument('--dim', type=positive_int, default=100,
                   help='embedding size (default: 100)')
    p.add_argument('--epochs', type=positive_int, default=None,
                   help='TransE epochs (default: the pretrainer\'s)')
    p.set_defaults(func=cmd_pretrain)

    # Accepted before or after the command; SUPPRESS keeps a subcommand
    # from resetting a --debug given before it.
    for p in sub.choices.values():
        p.add_argument('--debug', action='store_true',
                       default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    r"""Runs ``pyg-fewshot`` and returns its exit status.

    A user error (bad data or option, a file that cannot be read or written,
    a missing optional package, a diverged run; see :func:`_is_user_error`)
    ends with one line on stderr and status 2, Ctrl-C with one line and
    status 130; ``--debug`` or ``PYG_FEWSHOT_DEBUG=1`` re-raise them with
    their traceback. Any other exception is a bug and keeps its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = f'{parser.prog} {args.command}'
    debug = args.debug or _debug_env()
    try:
        if args.command == 'train':
            _check_model_args(args)
        args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    except SystemExit as e:
        # Helpers stop with SystemExit('error: ...'): report it like the
        # other user errors.
        if debug or not isinstance(e.code, str):
            raise
        print(f"{prog}: error: {e.code.removeprefix('error: ')}",
              file=sys.stderr)
        return 2
    except Exception as e:
        if debug or not _is_user_error(e):
            raise
        print(f'{prog}: error: {_one_line(e)}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
