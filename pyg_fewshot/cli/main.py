r"""``pyg-fewshot``: train, evaluate and pretrain from the command line.

The CLI is the top layer: it wires data, models, the meta-learning engine
and the evaluator together and never holds model logic itself.
"""
import argparse
import ast
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Union

import torch

from .. import __version__
from .._io import atomic_write_json
from ..data import EpisodeSampler, load_dataset
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
        dist_utils.launch(_train_worker, args.nproc, (args, ))
        with open(os.path.join(args.output, 'results.json')) as f:
            return json.load(f)
    try:
        return _train(args)
    finally:
        dist_utils.cleanup()


def _train_worker(args: argparse.Namespace) -> None:
    try:
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
    if main_process and world > 1:
        dist_utils.barrier()
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
                    text_model=args.text_model,
                    modality_dir=args.modality_dir, nproc=world,
                    batch_size=args.batch_size, version=__version__)
    trainer = MetaTrainer(learner, sampler, args.output, validate=validate,
                          lr=args.lr, max_steps=args.max_steps,
                          eval_every=args.eval_every, patience=args.patience,
                          grad_clip=args.grad_clip, amp=args.amp,
                          sparse_lr=args.entity_lr,
                          metadata=metadata, progress=not args.quiet)
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
        threads=torch.get_num_threads(), version=__version__)
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
    shots = args.shots or meta['shots']
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
    _attach_modalities(dataset, data, meta.get('text', False),
                       meta.get('text_model'), meta.get('modality_dir'))
    model = build_model(meta['model'], data, pretrained=False,
                        **model_kwargs)
    model.load_state_dict(state['model_state'])
    return model.to(_device(args.device)), data, meta


def cmd_experts(args: argparse.Namespace) -> Dict[str, Any]:
    from ..evaluation.experts import (expert_activations,
                                      plot_activation_heatmap)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='pyg-fewshot',
        description='Few-shot relational learning on knowledge graphs.')
    parser.add_argument('--version', action='version', version=__version__)
    sub = parser.add_subparsers(dest='command', required=True)

    def data_args(p: argparse.ArgumentParser, default: Optional[str]) -> None:
        p.add_argument('--dataset', default=default,
                       help="'umls-one' (bundled) or a folder in the "
                       'standard few-shot layout')
        p.add_argument('--data-root', default=None,
                       help='where processed data is cached (default: '
                       '$PYG_FEWSHOT_HOME or ~/.cache/pyg_fewshot)')
        p.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])

    p = sub.add_parser('train', help='meta-train a model, then evaluate it')
    p.add_argument('--model', required=True, choices=sorted(MODELS))
    data_args(p, DEFAULT_DATASET)
    p.add_argument('--shots', type=int, default=1)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--max-steps', type=int, default=1000)
    p.add_argument('--batch-size', type=int, default=1024)
    p.add_argument('--num-queries', type=int, default=3)
    p.add_argument('--eval-every', type=int, default=200)
    p.add_argument('--patience', type=int, default=30)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--entity-lr', type=float, default=None,
                   help='learning rate of the entity table (default: --lr; '
                   '0 freezes it, e.g. to keep pretrained vectors)')
    p.add_argument('--grad-clip', type=float, default=None)
    p.add_argument('--dim', type=int, default=None,
                   help='embedding size (default: the model default, or '
                   'that of the pretrained vectors)')
    p.add_argument('--pretrain', action='store_true',
                   help='start from TransE vectors pretrained on the '
                   'background graph (computed once, then cached)')
    p.add_argument('--inner-steps', type=int, default=1)
    p.add_argument('--inner-lr', type=_inner_lr, default=None,
                   help='inner step size beta (default: the model\'s, 5.0 '
                   'for MetaR and FusionAdapter, 0.05 for MoEMeta), or one '
                   'per local parameter: rel=5,*=0.05')
    p.add_argument('--margin', type=float, default=1.0)
    p.add_argument('--second-order', action='store_true')
    p.add_argument('--published-quirks', action='store_true',
                   help="reproduce the published code's inner step scaled "
                   'by 1/B and support-loss gradient leak')
    p.add_argument('--ties', default='mean',
                   choices=['mean', 'optimistic', 'pessimistic', 'expected'])
    p.add_argument('--amp', action='store_true')
    p.add_argument('--model-arg', action='append', default=[],
                   metavar='KEY=VALUE', help='extra model argument')
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
    g.add_argument('--backbone', default=None, choices=['metar', 'moemeta'])
    g.add_argument('--tta-steps', type=int, default=None,
                   help='adapter-only tuning steps per test relation')
    g.add_argument('--tta-lr', type=float, default=None)
    p.add_argument('--nproc', type=int, default=1,
                   help='data-parallel processes on this machine (gloo on '
                   'CPU, NCCL with --device cuda); --batch-size is the '
                   'global meta-batch, split evenly. Under torchrun, leave '
                   'it at 1: the job size comes from torchrun')
    p.add_argument('--output', default='runs/latest')
    p.add_argument('--no-resume', action='store_true')
    p.add_argument('--quiet', action='store_true')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('evaluate', help='re-evaluate a saved run')
    p.add_argument('--checkpoint', required=True,
                   help='run folder (uses best.pt) or checkpoint file')
    data_args(p, None)
    p.add_argument('--split', default='test', choices=['dev', 'test'])
    p.add_argument('--shots', type=int, default=None)
    p.add_argument('--ties', default='mean',
                   choices=['mean', 'optimistic', 'pessimistic', 'expected'])
    p.add_argument('--candidates', default='relation',
                   choices=['relation', 'all'])
    p.add_argument('--output', default=None, help='write metrics JSON here')
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser('experts', help='relation x expert activation '
                       'heatmap and expert-load statistics of a MoEMeta run')
    p.add_argument('--checkpoint', required=True)
    data_args(p, None)
    p.add_argument('--splits', nargs='+', default=['train', 'dev', 'test'],
                   choices=['train', 'dev', 'test'])
    p.add_argument('--shots', type=int, default=None,
                   help='route only the first K triples of each relation '
                   '(default: all)')
    p.add_argument('--output', default=None,
                   help='folder for experts.json / experts.png (default: '
                   'the run folder)')
    p.add_argument('--no-plot', action='store_true')
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser('pretrain', help='pretrain TransE vectors on the '
                       'background graph')
    data_args(p, DEFAULT_DATASET)
    p.add_argument('--dim', type=int, default=100)
    p.add_argument('--epochs', type=int, default=None)
    p.set_defaults(func=cmd_pretrain)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    args.func(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())
