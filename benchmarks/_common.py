"""Shared helpers of the benchmark scripts (not part of the library)."""
import math
import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_dataset(name: str, override: Optional[str] = None) -> str:
    """Folder of a benchmark copy: ``override``, else
    ``$PYG_FEWSHOT_SHARED_DATA/<name>``, else ``../shared/data/<name>``."""
    if override:
        path = override
    else:
        base = os.environ.get('PYG_FEWSHOT_SHARED_DATA',
                              os.path.join(REPO, '..', 'shared', 'data'))
        path = os.path.join(base, name)
    if not os.path.isdir(path):
        raise SystemExit(
            f"skipped: dataset folder '{path}' not found. Pass --data PATH or "
            f'set PYG_FEWSHOT_SHARED_DATA to the folder holding {name}/')
    return os.path.abspath(path)


def machine() -> str:
    return (f'{platform.processor() or platform.machine()}, '
            f'{torch.get_num_threads()} threads, torch {torch.__version__}, '
            f"{time.strftime('%Y-%m-%d')}")


def load_average() -> str:
    """The 1/5/15-minute load averages, for a benchmark's header."""
    try:
        return ' / '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError:
        return 'n/a'


def median_time(fn: Callable[[], object], repeats: int = 5,
                warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times: List[float] = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# Expert-dispatch timings of METHODS.md ("kernel facts measured here"),
# taken on this kind of machine when the published code's 6,800 tasks/s
# was measured: top-2 of 32 experts, 4,096 tokens, 100 -> 100, forward and
# backward, 2 threads.
REFERENCE_KERNEL_MS = {'dense': 96.0, 'grouped_mm': 8.6}


def reference_kernels(repeats: int = 5) -> Dict[str, float]:
    """Seconds (median of ``repeats``) of the METHODS.md expert-dispatch
    kernels, rebuilt here: all 32 experts computed densely (compute-bound)
    and the sorted grouped product (``F.grouped_mm``, mixed). Their ratio
    to :data:`REFERENCE_KERNEL_MS` estimates how fast the machine runs now
    against when the anchor was taken (these VMs drift by up to 1.5x
    between hours)."""
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(0)
    T, M, k, d = 4096, 32, 2, 100
    x = torch.randn(T, d, generator=g, requires_grad=True)
    W = torch.randn(M, d, d, generator=g).div_(10).requires_grad_()
    experts = torch.rand(T, M, generator=g).topk(k, dim=1).indices
    weights = torch.rand(T, k, generator=g)

    def dense() -> None:
        y = torch.einsum('ti,mio->tmo', x, W)
        idx = experts.unsqueeze(-1).expand(-1, -1, d)
        (y.gather(1, idx) * weights.unsqueeze(-1)).sum(1).sum().backward()

    def grouped() -> None:
        flat = experts.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token = order // k
        offs = torch.bincount(flat, minlength=M).cumsum(0).to(torch.int32)
        y = F.grouped_mm(x.index_select(0, token), W, offs=offs)
        y = y * weights.reshape(-1).index_select(0, order).unsqueeze(-1)
        y.new_zeros(T, d).index_add_(0, token, y).sum().backward()

    return {'dense': median_time(dense, repeats),
            'grouped_mm': median_time(grouped, repeats)}


def machine_speed(probe: Dict[str, float]) -> float:
    """How many times slower the machine runs now than when
    :data:`REFERENCE_KERNEL_MS` was measured (geometric mean over the
    kernels of ``probe``; below 1 means faster now)."""
    logs = [math.log(1e3 * probe[k] / v)
            for k, v in REFERENCE_KERNEL_MS.items()]
    return math.exp(sum(logs) / len(logs))


def write_output(text: str, path: Optional[str]) -> None:
    """Prints a result table and, if ``path`` is given, writes it there."""
    print(text)
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            f.write(text if text.endswith('\n') else text + '\n')


def add_timing_args(parser) -> None:
    """The ``--threads`` / ``--timer`` options shared by the layer
    benchmarks."""
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads (default: torch\'s default)')
    parser.add_argument('--timer', choices=['wall', 'cpu'], default='wall',
                        help='wall clock, or process CPU time (use with '
                        '--threads 1 when other jobs load the machine)')


def run_train(args: List[str]) -> dict:
    """Runs ``pyg-fewshot train ARGS`` in this process (the CLI's parser and
    :func:`pyg_fewshot.pipeline.run`) and returns its results.json, reusing
    a finished run folder (so an interrupted grid resumes where it
    stopped). A run that used all of a smaller ``--max-steps`` is extended
    to the larger one from its ``last.pt`` (``train`` resumes by default),
    so a grid's longer budget continues its shorter runs; one that stopped
    early is reused as it is.

    :mod:`_modules` is imported first, so that the experiment-only layers
    resolve by name (``--set model.aggregator=fixed_message`` or
    ``first_neighbors``)."""
    import json

    import _modules  # noqa: F401  (registers the experiment-only layers)
    from pyg_fewshot.cli.main import build_parser, run_config
    parsed = build_parser().parse_args(['train'] + args)
    path = os.path.join(parsed.output, 'results.json')
    if os.path.isfile(path):
        with open(path) as f:
            done = json.load(f)
        wanted = run_config(parsed).trainer.max_steps
        if done.get('stopped_early') or done['steps'] >= wanted:
            return done
    return parsed.func(parsed).to_dict()


def train_pretrained(config: List[str], data: str, shots: int, seed: int,
                     max_steps: int, eval_every: int, output: str,
                     batch_size: int = 1024) -> dict:
    """One run of ``pyg-fewshot train CONFIG`` on a TransE-pretrained
    background (the NELL-One protocol of docs/results.md), through
    :func:`run_train` (so a finished run folder is reused)."""
    return run_train(list(config) + [
        '--dataset', data, '--pretrain', '--shots', str(shots), '--seed',
        str(seed), '--max-steps', str(max_steps), '--eval-every',
        str(eval_every), '--batch-size', str(batch_size), '--output',
        output, '--quiet'])


def sets(*items: str) -> List[str]:
    """``--set`` arguments of ``pyg-fewshot train``, one per ``KEY=VALUE``
    item (a dotted key into the run configuration, a YAML value)."""
    out: List[str] = []
    for item in items:
        out += ['--set', item]
    return out


# MoEMeta's flat options before the configurations were split by part
# (``--model-arg KEY=VALUE``) -> the dotted keys of the run configuration.
_AGGREGATOR_ARGS = {
    'max_neighbors': 'max_neighbors', 'dropout': 'dropout',
    'aggregator_scale': 'residual_scale',
    'aggregator_attention': 'attention', 'aggregator_gate': 'gate',
    'aggregator_act': 'act', 'aggregator_mix': 'mix',
    'aggregator_init': 'init',
    'aggregator_update_dropout': 'update_dropout',
}
_RELATION_META_ARGS = ('num_experts', 'top_k', 'renormalize', 'scale_by_k',
                       'load_balance', 'noisy_gating')


def _yaml(value) -> str:
    """``value`` as a ``--set`` value: a plain string when YAML reads it back
    as itself, else JSON (which YAML reads)."""
    import json

    import yaml
    if isinstance(value, str):
        try:
            if yaml.safe_load(value) == value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def moemeta_sets(items: List[str]) -> List[str]:
    """``--set`` arguments of MoEMeta's former flat ``--model-arg KEY=VALUE``
    options (``aggregator_scale=0.0``, ``projection=none``,
    ``aggregate=False``, ``load_balance=0.1``, ...), per the table of
    docs: ``aggregator_scale`` -> ``model.aggregator_kwargs.residual_scale``,
    ``aggregate=False`` -> ``model.aggregator=null``,
    ``aggregator_learn_message=False`` -> ``model.aggregator=fixed_message``,
    ``sample_neighbors=False`` -> ``model.aggregator=first_neighbors``,
    ``moe=False`` -> ``model.relation_meta=mlp``,
    ``local_adaptation=False`` -> ``model.projection=null`` and
    ``learner.inner_steps=0``, and so on. Used where a script's option (and
    the run folders named after it) keeps the former spelling."""
    import ast

    out: List[str] = []
    no_aggregator, variants = False, set()
    for item in items:
        key, sep, text = item.partition('=')
        if not sep:
            raise SystemExit(f"error: expected KEY=VALUE, got '{item}'")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        yaml = _yaml(value)
        if key in _AGGREGATOR_ARGS:
            out.append(f'model.aggregator_kwargs.{_AGGREGATOR_ARGS[key]}='
                       f'{yaml}')
        elif key in _RELATION_META_ARGS:
            out.append(f'model.relation_meta_kwargs.{key}={yaml}')
        elif key == 'expert_hidden':
            out += [f'model.relation_meta_kwargs.hidden_channels={yaml}',
                    f'model.relation_meta_kwargs.gate_hidden_channels={yaml}']
        elif key == 'mlp_hidden':
            out.append(f'model.relation_meta_kwargs.hidden_channels={yaml}')
        elif key == 'moe':
            out.append(f"model.relation_meta={'moe' if value else 'mlp'}")
        elif key == 'aggregate':
            no_aggregator = not value
        elif key in ('aggregator_learn_message', 'sample_neighbors'):
            if not value:
                variants.add('fixed_message'
                             if key == 'aggregator_learn_message'
                             else 'first_neighbors')
        elif key == 'aggregator_relations':
            out.append(f'model.relation_init={yaml}')
        elif key == 'projection':
            mode = None if str(value).lower() == 'none' else value
            out.append(f'model.projection={_yaml(mode)}')
        elif key == 'projection_init':
            out.append(f'model.projection_kwargs.init={yaml}')
        elif key == 'local_adaptation':
            if not value:
                out += ['model.projection=null', 'learner.inner_steps=0']
        elif key in ('embedding_dim', 'sparse', 'pretrained'):
            out.append(f'model.{key}={yaml}')
        else:
            raise SystemExit(f"error: unknown MoEMeta option '{key}'")
    if no_aggregator:  # wins over the aggregator's options, as it did
        out.append('model.aggregator=null')
    elif len(variants) > 1:
        raise SystemExit('error: no aggregator keeps its message fixed and '
                         'its first neighbours in training')
    elif variants:
        out.append(f'model.aggregator={variants.pop()}')
    return sets(*out)


def mean_std(values: List[float]) -> str:
    if len(values) == 1:
        return f'{values[0]:.3f}'
    return f'{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}'


def interleaved_medians(calls: 'Dict[str, Callable[[], object]]',
                        rounds: int,
                        clock: Callable[[], float] = time.perf_counter,
                        warmup: bool = True) -> 'Dict[str, float]':
    """Runs every call once per round and returns each call's median time.

    Interleaving makes slow drifts in the machine's load hit all methods
    alike; rotating the order each round spreads the cost of following a
    method that freed (and returned to the OS) a lot of memory.
    """
    if warmup:
        for fn in calls.values():
            fn()
    names = list(calls)
    times: 'Dict[str, List[float]]' = {name: [] for name in calls}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = clock()
            calls[name]()
            times[name].append(clock() - t0)
    return {name: statistics.median(v) for name, v in times.items()}
