r"""``pyg-fewshot``: train, evaluate and pretrain from the command line.

The CLI is the top layer: it turns options and configuration files into a
:class:`~pyg_fewshot.pipeline.RunConfig` and calls
:func:`~pyg_fewshot.pipeline.run`; it never holds model or training logic.
Heavy packages (torch, PyG) are imported inside the commands, so that
``--help`` and option errors answer at once.
"""
import argparse
import errno
import importlib
import math
import os
import sys
from typing import Any, Callable, Dict, List, Optional

from .. import __version__

DEFAULT_DATASET = 'umls-one'
MODEL_NAMES = ('fusionadapter', 'metar', 'moemeta')


def _inner_lr(text: str) -> Any:
    r"""``--inner-lr``: a step size, or one per local parameter
    (``rel=5,*=0.05``); every step finite and non-negative (a negative step
    ascends the support loss)."""
    try:
        if '=' not in text:
            value: Any = float(text)
            steps = [value]
        else:
            value = {}
            for item in text.split(','):
                key, _, number = item.partition('=')
                value[key.strip()] = float(number)
            steps = list(value.values())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'must be a number or KEY=NUMBER pairs, got {text!r}') from None
    if not all(0 <= step < math.inf for step in steps):
        raise argparse.ArgumentTypeError(
            f'step sizes must be non-negative numbers, got {text}')
    return value


def _key_value(text: str) -> str:
    r"""``--set``: the ``KEY=VALUE`` form only; the key and value are checked
    against the configuration once it is assembled."""
    if not text.partition('=')[0] or '=' not in text:
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    return text


# Configuration ---------------------------------------------------------------

#: Options of ``train`` that set one configuration value (dest → dotted key).
_OPTION_KEYS = {
    'dataset': 'data.dataset', 'data_root': 'data.root',
    'pretrain': 'data.pretrain', 'background_tasks': 'data.background_tasks',
    'shots': 'episodes.shots', 'batch_size': 'episodes.batch_size',
    'seed': 'seed', 'max_steps': 'trainer.max_steps',
    'eval_every': 'trainer.eval_every', 'lr': 'trainer.lr',
    'inner_lr': 'learner.inner_lr', 'device': 'device', 'nproc': 'nproc',
}


def run_config(args: argparse.Namespace) -> Any:
    r"""The :class:`~pyg_fewshot.pipeline.RunConfig` of ``train``'s options:
    the presets (``--preset``, in order), the configuration file
    (``--config``), ``--model``, the options given on the command line, then
    every ``--set KEY=VALUE`` in order."""
    from ..pipeline import resolve_config
    if args.model is None and not args.config and not args.preset:
        raise ValueError('argument --model is required without --config or '
                         f"--preset (one of {', '.join(MODEL_NAMES)})")
    config = resolve_config(args.config, args.preset, args.model)
    items = [f'{key}={_yaml_value(getattr(args, dest))}'
             for dest, key in _OPTION_KEYS.items()
             if getattr(args, dest) is not None]
    if args.dim is not None:
        key = ('model.backbone.embedding_dim'
               if config.model.name == 'fusionadapter'
               else 'model.embedding_dim')
        items.append(f'{key}={args.dim}')
    return config.override(items + list(args.set))


def default_output(config: Any) -> str:
    r"""``runs/<model>-<dataset>-<K>shot-s<seed>-<hash>``, the hash that of
    every setting a run must match to resume: the same configuration finds
    its own folder again (and resumes or extends it), another one never
    lands in it by accident."""
    from .._config import config_hash
    dataset = os.path.basename(os.path.normpath(config.data.dataset))
    return os.path.join(
        'runs', f'{config.model.name}-{dataset}-{config.episodes.shots}shot-'
        f's{config.seed}-{config_hash(config.resume_key())}')


def _yaml_value(value: Any) -> str:
    import json
    # JSON is YAML: numbers, booleans, strings and dicts keep their type.
    return json.dumps(value)


def _print_metrics(name: str, res: Dict[str, Any]) -> None:
    print(f"{name}: MRR {res['mrr']:.4f}  Hits@1 {res['hits@1']:.4f}  "
          f"Hits@5 {res['hits@5']:.4f}  Hits@10 {res['hits@10']:.4f}  "
          f"({res['num_queries']} queries, macro MRR "
          f"{res['macro']['mrr']:.4f})")


def _print_floors(split: str, chance: Dict[str, Any],
                  degree: Dict[str, Any]) -> None:
    # The two floors a model's numbers must be read against.
    print(f"{split} random-scoring baseline: MRR {chance['mrr']:.4f}  "
          f"Hits@10 {chance['hits@10']:.4f}")
    print(f"{split} degree baseline (rank by background degree): MRR "
          f"{degree['mrr']:.4f}  Hits@10 {degree['hits@10']:.4f}")


# Commands ------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> Any:
    from ..pipeline import run
    config = run_config(args)
    if args.output is None:
        args.output = default_output(config)
    result = run(config, args.output, resume=not args.no_resume,
                 progress=not args.quiet, trackers=args.tracker)
    _print_metrics('dev ', result.dev)
    _print_metrics('test', result.test)
    _print_floors('test', result.test_random_baseline,
                  result.test_degree_baseline)
    print(f"results written to {os.path.join(args.output, 'results.json')}")
    return result


def cmd_evaluate(args: argparse.Namespace) -> Dict[str, Any]:
    from .._io import atomic_write_json
    from ..evaluation import chance_level, degree_baseline, evaluate
    from ..meta import MetaLearner
    from ..pipeline import load_run
    from ..pipeline.runner import metrics_view
    model, data, config = load_run(args.checkpoint, args.dataset, args.device)
    shots = config.episodes.shots if args.shots is None else args.shots
    config.episodes.shots = shots
    config.episodes.check(data, (args.split, ), use='to evaluate')
    # The run's learner: test-time tuning (FusionAdapter) runs the same
    # inner loop here as in training.
    learner = MetaLearner.from_config(model, config.learner)
    res = evaluate(model, data, args.split, shots, learner,
                   ties_policy=args.ties or config.ties,
                   candidate_set=args.candidates,
                   seed=config.seed)
    _print_metrics(args.split, res)
    _print_floors(args.split,
                  chance_level(data, args.split, shots, args.candidates),
                  degree_baseline(data, args.split, shots, args.candidates))
    if args.output:
        atomic_write_json(metrics_view(res), args.output)
    return res


def cmd_experts(args: argparse.Namespace) -> Dict[str, Any]:
    if not args.no_plot:
        # Before any work, so that no experts.json is left without its plot.
        _require_matplotlib()
    from .._io import atomic_write_json
    from ..evaluation.experts import (expert_activations,
                                      plot_activation_heatmap)
    from ..pipeline import load_run
    model, data, config = load_run(args.checkpoint, args.dataset,
                                   args.device)
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
        # Titled with the run's model, dataset, shots, seed and config
        # hash; the statistics above are written on the figure too.
        plot_activation_heatmap(analysis, png, config=config)
        print(f'heatmap written to {png}')
    return report


def _presets_module() -> Any:
    r"""``pyg_fewshot.pipeline.presets`` without the package's
    ``__init__`` (which imports torch for :class:`RunConfig`): listing the
    preset files needs the standard library only."""
    import importlib.util
    name = f'{__package__.rpartition(".")[0]}.pipeline.presets'
    if name in sys.modules:
        return sys.modules[name]
    path = os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), 'pipeline', 'presets.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    # Not registered in sys.modules: a later `import pyg_fewshot.pipeline`
    # still loads the package (and this module) the ordinary way.
    spec.loader.exec_module(module)
    return module


def _start_configs(base: Any, starts: List[str]) -> List[Any]:
    r"""``tune``'s ``--start`` points: each a preset or a run file laid over
    the base configuration."""
    from .. import _config
    from ..pipeline import RunConfig
    from ..pipeline.presets import load_preset, merge
    out = []
    for start in starts:
        if os.path.isfile(start):
            layer, where = _config.load_file(start), f"'{start}'"
        else:
            layer, where = load_preset(start), f"preset '{start}'"
        out.append(RunConfig.from_dict(merge(base.to_dict(), layer),
                                       where=where))
    return out


def cmd_tune(args: argparse.Namespace) -> Dict[str, Any]:
    from ..pipeline.tune import load_space, tune
    config = run_config(args)
    summary = tune(config, load_space(args.space), args.trials, args.output,
                   seed=args.search_seed, progress=not args.quiet,
                   where=f"'{args.space}'",
                   starts=_start_configs(config, args.start))
    print(f"best of {len(summary['trials'])} trials: #{summary['best_trial']}"
          f" {summary['best_params']}: dev MRR {summary['best_dev_mrr']:.4f} "
          f"(test MRR {summary['best_test_mrr']:.4f}, not used to choose)")
    print(f"best configuration written to "
          f"{os.path.join(args.output, 'best_config.yaml')}")
    return summary


def cmd_presets(args: argparse.Namespace) -> None:
    # Reads the preset files only: no torch import.
    presets = _presets_module().list_presets()
    width = max(len(name) for name, _ in presets)
    for name, description in presets:
        print(f'{name:<{width}}  {description}')


def cmd_pretrain(args: argparse.Namespace) -> None:
    import time

    from ..data import load_dataset
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
               '(also: PYG_FEWSHOT_DEBUG=1; default: off)')


def _thread_defaults() -> None:
    r"""Lets idle OpenMP workers sleep instead of spinning, unless the user
    chose (``OMP_WAIT_POLICY``). Spinning workers on a shared machine whose
    other cores are busy made the README's main job several times slower
    (docs/benchmarks.md, ``benchmarks/cli_threads.py``). It must happen
    before torch is imported, which is why the CLI imports it lazily."""
    os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def _run_options(p: argparse.ArgumentParser) -> None:
    r"""The options that make a run configuration (``train``, ``tune``)."""
    p.add_argument('--config', default=None, metavar='FILE',
                   help='run configuration file (YAML or JSON; default: '
                   'none, every setting at its default)')
    p.add_argument('--preset', action='append', default=[],
                   metavar='NAME',
                   help='a named configuration shipped with the package '
                   '(repeatable, laid under --config; `pyg-fewshot presets` '
                   'lists them) (default: none)')
    p.add_argument('--model', default=None, choices=MODEL_NAMES,
                   help='model to train (required without --config or '
                   "--preset; default: the configuration file's or "
                   "preset's)")
    # None: the dataset of the configuration file or preset, if any.
    _data_options(p, dataset=None)
    p.add_argument('--device', default=None, choices=['cpu', 'cuda'],
                   help='device to run on (default: cpu)')
    p.add_argument('--shots', type=positive_int, default=None,
                   help='support triples K per task (default: 1)')
    p.add_argument('--seed', type=non_negative_int, default=None,
                   help='random seed (default: 0)')
    p.add_argument('--max-steps', type=positive_int, default=None,
                   help='meta-training steps (default: 1000)')
    p.add_argument('--batch-size', type=positive_int, default=None,
                   help='tasks per meta-batch (default: 1024)')
    p.add_argument('--eval-every', type=positive_int, default=None,
                   help='steps between dev validations (default: 200)')
    p.add_argument('--lr', type=positive_float, default=None,
                   help='learning rate (default: 1e-3)')
    p.add_argument('--dim', type=positive_int, default=None,
                   help='embedding size (default: 100)')
    p.add_argument('--inner-lr', type=_inner_lr, default=None,
                   help="inner step size beta, or one per local parameter "
                   "as rel=5,*=0.05 (default: the model's, 5.0 for MetaR "
                   'and FusionAdapter, 0.05 for MoEMeta)')
    p.add_argument('--pretrain', action='store_true', default=None,
                   help='start from TransE vectors pretrained on the '
                   'background graph (computed once, then cached; default: '
                   'off)')
    p.add_argument('--background-tasks', action='store_true', default=None,
                   help='also meta-train on every background relation with '
                   "more than 10 triples and 10 candidates (MetaR's "
                   'In-Train; with --pretrain, the hybrid; default: off)')
    p.add_argument('--set', action='append', default=[], type=_key_value,
                   metavar='KEY=VALUE',
                   help='any other configuration value, as a dotted key and '
                   'a YAML value (repeatable), e.g. learner.margin=2, '
                   'model.aggregator_kwargs.mix=convex, '
                   'trainer.patience=10 (default: none)')
    p.add_argument('--nproc', type=positive_int, default=None,
                   help='data-parallel processes on this machine (gloo on '
                   'CPU, NCCL with --device cuda); the meta-batch is split '
                   'evenly. Under torchrun, leave it at 1 (default: 1)')


def _data_options(p: argparse.ArgumentParser,
                  dataset: Optional[str]) -> None:
    r"""``--dataset`` and ``--data-root`` (``train``, ``tune``,
    ``pretrain``)."""
    p.add_argument('--dataset', default=dataset,
                   help="'umls-one' (bundled) or a folder in the standard "
                   'few-shot layout (default: umls-one)')
    p.add_argument('--data-root', default=None,
                   help='where processed data is cached (default: '
                   '$PYG_FEWSHOT_HOME or ~/.cache/pyg_fewshot)')


def _saved_run_options(p: argparse.ArgumentParser) -> None:
    r"""The options that find a saved run (``evaluate``, ``experts``)."""
    p.add_argument('--checkpoint', required=True,
                   help='run folder (uses best.pt) or checkpoint file')
    p.add_argument('--dataset', default=None,
                   help="where to read the run's dataset from (default: "
                   'where the run read it)')
    p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'],
                   help='device to run on (default: cpu)')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-fewshot',
        description='Few-shot relational learning on knowledge graphs.')
    parser.add_argument('--version', action='version', version=__version__)
    parser.add_argument('--debug', action='store_true', help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser(
        'train', help='meta-train a model, then evaluate it',
        description='Meta-train a model, then evaluate it. The run is '
        'configured by --config FILE (YAML or JSON, the layout of '
        'RunConfig), then the options below, then every --set KEY=VALUE; '
        'the resolved configuration is written to OUTPUT/config.yaml.')
    _run_options(p)
    p.add_argument('--output', default=None,
                   help='run folder: checkpoints, results.json, config.yaml '
                   '(default: runs/MODEL-DATASET-Kshot-sSEED-HASH, one '
                   'folder per configuration, so a rerun of the same one '
                   'resumes it and another never reuses it)')
    p.add_argument('--no-resume', action='store_true',
                   help="start afresh even if the run folder has a "
                   "'last.pt' (default: resume)")
    p.add_argument('--quiet', action='store_true',
                   help='no progress bar (default: shown)')
    p.add_argument('--tracker', action='append', default=[],
                   choices=['tensorboard', 'csv', 'json', 'mlflow', 'wandb'],
                   help='report the losses, dev MRR, expert routing and '
                   'final metrics into the run folder (repeatable; '
                   'tensorboard, mlflow and wandb need their package) '
                   '(default: none)')
    p.set_defaults(func=cmd_train)

    # tune: the run options of train (the base configuration), a search
    # space and a budget.
    tune_parser = sub.add_parser(
        'tune', help='search hyper-parameters on dev with Optuna',
        description='Search hyper-parameters on the dev split with Optuna '
        '(TPE): every trial trains the base configuration (the options of '
        'train) with values drawn from --space, in OUTPUT/trial_<n>; the '
        'objective is dev MRR, never test. Resumable (OUTPUT/study.db).')
    _run_options(tune_parser)
    tune_parser.add_argument('--space', required=True, metavar='FILE',
                             help='search space (YAML or JSON): dotted key '
                             '-> {type: float|int|categorical, low, high, '
                             'log | choices} (required)')
    tune_parser.add_argument('--start', action='append', default=[],
                             metavar='PRESET|FILE',
                             help='a starting point tried after the base '
                             'configuration: a preset or a run file laid '
                             'over it (repeatable; default: the base only)')
    tune_parser.add_argument('--trials', type=positive_int, default=20,
                             help='trials to finish (default: 20)')
    tune_parser.add_argument('--search-seed', type=non_negative_int,
                             default=0,
                             help="seed of Optuna's sampler (default: 0)")
    tune_parser.add_argument('--output', default='runs/tune',
                             help='folder of the study, the trials and '
                             'best_config.yaml (default: runs/tune)')
    tune_parser.add_argument('--quiet', action='store_true',
                             help='no progress bars (default: shown)')
    tune_parser.set_defaults(func=cmd_tune)

    p = sub.add_parser('presets', help='list the named configurations '
                       '(--preset) with what each reproduces')
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser('evaluate', help='re-evaluate a saved run')
    _saved_run_options(p)
    p.add_argument('--split', default='test', choices=['dev', 'test'],
                   help='split to evaluate (default: test)')
    p.add_argument('--shots', type=positive_int, default=None,
                   help="support triples K (default: the run's)")
    p.add_argument('--ties', default=None,
                   choices=['mean', 'optimistic', 'pessimistic', 'expected'],
                   help='rank of the true tail among equal scores '
                   "(default: the run's, ties in its configuration)")
    p.add_argument('--candidates', default='relation',
                   choices=['relation', 'all'],
                   help="rank among the relation's candidates or all "
                   'entities (default: relation)')
    p.add_argument('--output', default=None,
                   help='write metrics JSON here (default: print only)')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('experts', help='relation x expert activation '
                       'heatmap and expert-load statistics of a MoEMeta run')
    _saved_run_options(p)
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
                   help='skip experts.png, so no matplotlib is needed '
                   '(default: plot)')
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser('pretrain', help='pretrain TransE vectors on the '
                       'background graph')
    _data_options(p, dataset=DEFAULT_DATASET)
    p.add_argument('--dim', type=positive_int, default=100,
                   help='embedding size (default: 100)')
    p.add_argument('--epochs', type=positive_int, default=None,
                   help="TransE epochs (default: the pretrainer's)")
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
    _thread_defaults()
    prog = f'{parser.prog} {args.command}'
    debug = args.debug or _debug_env()
    try:
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
