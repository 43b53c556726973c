r"""Data-parallel meta-training on :mod:`torch.distributed`.

Every process (rank) holds a full replica of the model, samples its own
share of the meta-batch from its own seed stream, and after the backward
pass the global gradients are averaged over the ranks, so every replica
takes the same optimiser step: the update equals that of one process on the
combined meta-batch (the outer loss is a mean over tasks and every rank has
the same number of tasks).

The averaging is an explicit all-reduce rather than
:class:`~torch.nn.parallel.DistributedDataParallel`: the meta-learning loop
calls several model methods (``embed``, ``init_local``, ``score``) and the
inner loop runs through :mod:`torch.func`, neither of which goes through
the single ``forward`` that DDP's hooks assume, and the entity table has
*sparse* gradients, which NCCL cannot all-reduce. Dense gradients travel
in one flat bucket per dtype; sparse ones are coalesced and all-gathered
(indices and values), so a step moves only the rows the meta-batch touched.

Processes are started by ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) or by
:func:`launch` (behind ``pyg-fewshot train --nproc N``); gloo is used on
CPU and NCCL on GPUs.
"""
import contextlib
import ctypes
import ctypes.util
import os
import pickle
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import (Any, Callable, ContextManager, Dict, List, Optional,
                    Sequence, Tuple)

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from .._io import run_lock

ENV_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


def is_distributed() -> bool:
    r"""Whether a process group with more than one rank is running."""
    return (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() > 1)


def get_rank() -> int:
    r"""This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    r"""Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    r"""Whether this process writes files and prints (rank 0)."""
    return get_rank() == 0


def launched_by_torchrun() -> bool:
    r"""Whether the environment describes a multi-process job."""
    return int(os.environ.get('WORLD_SIZE', '1')) > 1


def init_distributed(backend: Optional[str] = None,
                     device: Optional[str] = None
                     ) -> Tuple[int, int, torch.device]:
    r"""Joins the process group described by the environment (``torchrun``
    or :func:`launch`) unless one exists, and picks this rank's device.

    Args:
        backend (str, optional): ``'gloo'`` or ``'nccl'``; defaults to NCCL
            when the job runs on CUDA devices, else gloo.
        device (str, optional): ``'cpu'``, ``'cuda'`` or ``'auto'`` (CUDA
            when available). A CUDA job puts rank ``LOCAL_RANK`` on
            ``cuda:LOCAL_RANK``. (default: ``'auto'``)

    Returns:
        ``(rank, world_size, device)``; ``(0, 1, device)`` outside a
        multi-process job.
    """
    name = device or 'auto'
    use_cuda = (name == 'cuda' or name.startswith('cuda:')
                or (name == 'auto' and torch.cuda.is_available()))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    if use_cuda:
        dev = torch.device('cuda', local_rank if ':' not in name else
                           int(name.split(':')[1]))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device('cpu')
    if not launched_by_torchrun():
        return 0, 1, dev
    if not (dist.is_available() and dist.is_initialized()):
        missing = [v for v in ENV_VARS if v not in os.environ]
        if missing:
            raise RuntimeError(
                f"A multi-process job needs the environment variables "
                f"{', '.join(ENV_VARS)} (set by torchrun or "
                f"'pyg-fewshot train --nproc N'); missing: "
                f"{', '.join(missing)}")
        dist.init_process_group(backend or ('nccl' if use_cuda else 'gloo'))
    return dist.get_rank(), dist.get_world_size(), dev


def writer_lock(folder: str) -> ContextManager[Any]:
    r"""The lock of the run folder ``folder``
    (:func:`pyg_fewshot._io.run_lock`) on the job's rank 0, its only
    writer, and a no-op on the other ranks. The rank is read from the
    environment, so the lock can be taken before the process group is
    joined."""
    if int(os.environ.get('RANK', '0')) != 0:
        return contextlib.nullcontext()
    return run_lock(folder)


def cleanup() -> None:
    r"""Leaves the process group if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    r"""A seed for rank ``rank`` of a job seeded with ``seed``: rank 0 keeps
    ``seed`` (so a one-process job is the usual single-process run); other
    ranks get statistically independent streams from
    :class:`numpy.random.SeedSequence`."""
    if rank == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed), int(rank)]).generate_state(
        1, np.uint64)[0]
    return int(state) & ((1 << 63) - 1)


def split_batch_size(batch_size: int, world_size: int) -> int:
    r"""The per-rank share of a global meta-batch; an error unless it
    divides evenly (unequal shares would weight the ranks' tasks
    differently in the averaged gradient)."""
    if batch_size % world_size:
        raise ValueError(
            f"The meta-batch size {batch_size} is not divisible by the "
            f"{world_size} processes; choose a multiple of {world_size}")
    return batch_size // world_size


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    r"""Copies rank ``src``'s parameters and buffers to every rank, so all
    replicas start identical whatever their random initialisation."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def all_gather_objects(obj: Any) -> List[Any]:
    r"""Every rank's ``obj`` (picklable), in rank order."""
    if not is_distributed():
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    r"""Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src)
    return box[0]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


class GradientAverager:
    r"""Averages the gradients of a replica's parameters over all ranks,
    in place; call it between ``backward()`` and the optimiser step.

    Dense gradients are concatenated into one flat tensor per dtype and
    device and all-reduced at once. A parameter that got no gradient on
    any rank keeps ``grad = None`` (so Adam skips it exactly as it would in
    one process); one that got a gradient on some ranks only is averaged
    with zeros for the others. Sparse COO gradients (``nn.Embedding(...,
    sparse=True)``) are coalesced, all-gathered and summed: only the
    touched rows travel, and NCCL, which has no sparse all-reduce, works
    too.

    Args:
        dense_params (Sequence[Parameter]): Parameters with dense gradients.
        sparse_params (Sequence[Parameter]): Parameters with sparse
            gradients.
        group (ProcessGroup, optional): The process group (default group if
            :obj:`None`).
    """
    def __init__(self, dense_params: Sequence[torch.nn.Parameter],
                 sparse_params: Sequence[torch.nn.Parameter] = (),
                 group: Optional[Any] = None) -> None:
        self.dense_params = list(dense_params)
        self.sparse_params = list(sparse_params)
        self.group = group
        buckets: Dict[Tuple[torch.dtype, torch.device],
                      List[torch.nn.Parameter]] = {}
        for p in self.dense_params:
            buckets.setdefault((p.dtype, p.device), []).append(p)
        self.buckets = list(buckets.values())

    @property
    def world_size(self) -> int:
        return dist.get_world_size(self.group)

    def __call__(self) -> None:
        if not is_distributed():
            return
        for params in self.buckets:
            self._average_dense(params)
        for p in self.sparse_params:
            self._average_sparse(p)

    def _average_dense(self, params: List[torch.nn.Parameter]) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p)
                 for p in params]
        if any(g.is_sparse for g in grads):
            raise RuntimeError(
                'GradientAverager: a parameter declared dense has a sparse '
                'gradient; list it in sparse_params (see '
                'FewShotModel.sparse_parameters)')
        present = torch.tensor([p.grad is not None for p in params],
                               dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([g.reshape(-1) for g in grads] + [present])
        dist.all_reduce(flat, group=self.group)
        flat[:-len(params)].div_(self.world_size)
        start = 0
        for p, count in zip(params, flat[-len(params):].tolist()):
            n = p.numel()
            if count > 0:
                # A view: flat is this call's own buffer.
                p.grad = flat[start:start + n].view_as(p)
            else:
                p.grad = None
            start += n

    def _average_sparse(self, p: torch.nn.Parameter) -> None:
        world = self.world_size
        g = p.grad
        if g is None:
            index = torch.zeros(0, dtype=torch.long, device=p.device)
            values = p.new_zeros((0, *p.shape[1:]))
        else:
            if not g.is_sparse:
                raise RuntimeError(
                    'GradientAverager: a parameter declared sparse has a '
                    'dense gradient')
            g = g.coalesce()
            index, values = g.indices()[0], g.values()
        # all_gather needs equal shapes: pad every rank to the largest nnz.
        nnz = torch.tensor([index.numel()], device=p.device)
        sizes = [torch.zeros_like(nnz) for _ in range(world)]
        dist.all_gather(sizes, nnz, group=self.group)
        counts = [int(s) for s in sizes]
        size = max(counts)
        if size == 0:
            p.grad = None
            return
        pad = size - index.numel()
        index = torch.cat([index, index.new_zeros(pad)])
        values = torch.cat([values,
                            values.new_zeros((pad, *values.shape[1:]))])
        all_index = [torch.empty_like(index) for _ in range(world)]
        all_values = [torch.empty_like(values) for _ in range(world)]
        dist.all_gather(all_index, index, group=self.group)
        dist.all_gather(all_values, values, group=self.group)
        index = torch.cat([i[:c] for i, c in zip(all_index, counts)])
        values = torch.cat([v[:c] for v, c in zip(all_values, counts)])
        p.grad = torch.sparse_coo_tensor(index.unsqueeze(0), values / world,
                                         p.shape,
                                         check_invariants=False).coalesce()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _watch_parent(parent: int, interval: float = 1.0) -> None:
    # Polling fallback where prctl is missing (or where the parent's thread
    # that started us exits while the parent lives on).
    while os.getppid() == parent:
        time.sleep(interval)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(parent: int) -> None:
    r"""Makes this process end (``SIGTERM``) when its parent ``parent``
    does, however the parent ends (even ``SIGKILL``): a launcher's workers
    must never outlive it, training on and writing checkpoints into a run
    folder that a new job may be using.

    On Linux the kernel sends the signal (``prctl(PR_SET_PDEATHSIG)``);
    everywhere a daemon thread also checks every second that the parent is
    alive. If the parent is already gone, the process ends at once.
    """
    # torch's spawn wrapper asks for SIGINT, which a launcher started in
    # the background (SIGINT ignored, and inherited so) never delivers.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith('linux'):
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6',
                           use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f'prctl(PR_SET_PDEATHSIG): {os.strerror(err)}')
    # The parent may have died before prctl took effect: we would then have
    # been reparented already and no signal would ever come.
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=_watch_parent, args=(parent, ), daemon=True,
                     name='pyg_fewshot-parent-watch').start()


def _worker(local_rank: int, fn: Callable[..., Any], args: Tuple[Any, ...],
            nproc: int, env: Dict[str, str]) -> None:
    die_with_parent(int(env['PYG_FEWSHOT_LAUNCHER_PID']))
    os.environ.update(env)
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank),
                      WORLD_SIZE=str(nproc), LOCAL_WORLD_SIZE=str(nproc))
    # torch read OMP_NUM_THREADS when this interpreter imported it, which
    # may have been before the variable was set: apply it explicitly.
    torch.set_num_threads(int(env['OMP_NUM_THREADS']))
    try:
        fn(*args)
    except Exception as e:
        # torch passes only the traceback text on; keep the exception
        # itself so that the launcher raises what the worker raised.
        path = os.path.join(env['PYG_FEWSHOT_ERROR_DIR'], f'{local_rank}.pkl')
        with contextlib.suppress(Exception), open(path, 'wb') as f:
            pickle.dump(e, f)
        raise


def _worker_error(folder: str, rank: int) -> Optional[BaseException]:
    with contextlib.suppress(Exception), open(
            os.path.join(folder, f'{rank}.pkl'), 'rb') as f:
        return pickle.load(f)
    return None


def _stop(processes: List[Any], grace: float = 5.0) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()  # SIGTERM, whose default action die_with_parent set
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()


def launch(fn: Callable[..., Any], nproc: int,
           args: Tuple[Any, ...] = ()) -> None:
    r"""Runs ``fn(*args)`` in ``nproc`` fresh processes on this machine, set
    up as ``torchrun --nproc-per-node nproc`` would (the environment
    variables of :data:`ENV_VARS`, a free local port, and
    ``OMP_NUM_THREADS=1`` unless it is set), and waits for all of them; an
    exception in any process is raised here (the worker's own exception
    where it can be pickled, else
    :class:`torch.multiprocessing.ProcessRaisedException`). The processes
    end with the launcher, however it ends: they are stopped when it is
    interrupted (``KeyboardInterrupt``) and signalled by the kernel when it
    is killed (see :func:`die_with_parent`).

    Args:
        fn (callable): A picklable (module-level) function; it calls
            :func:`init_distributed` itself.
        nproc (int): Number of processes.
        args (tuple): Arguments of ``fn``.
    """
    if nproc < 1:
        raise ValueError(f"'nproc' must be at least 1 (got {nproc})")
    errors = tempfile.mkdtemp(prefix='pyg_fewshot_launch_')
    env = {'MASTER_ADDR': '127.0.0.1', 'MASTER_PORT': str(_free_port()),
           'PYG_FEWSHOT_LAUNCHER_PID': str(os.getpid()),
           'PYG_FEWSHOT_ERROR_DIR': errors}
    # torchrun's default: several processes each running a full OpenMP
    # team would oversubscribe the cores.
    env['OMP_NUM_THREADS'] = os.environ.get('OMP_NUM_THREADS', '1')
    # Spawned interpreters inherit this environment and import torch
    # before _worker runs, so the thread count must be set here already.
    saved = os.environ.get('OMP_NUM_THREADS')
    os.environ['OMP_NUM_THREADS'] = env['OMP_NUM_THREADS']
    try:
        context = torch.multiprocessing.start_processes(
            _worker, args=(fn, args, nproc, env), nprocs=nproc, join=False,
            start_method='spawn')
        try:
            while not context.join():
                pass
        except BaseException:
            # Ctrl-C or an error here: without this the interpreter's exit
            # would wait for the workers to finish training.
            _stop(context.processes)
            raise
    except torch.multiprocessing.ProcessRaisedException as e:
        error = _worker_error(errors, e.error_index)
        if error is None:
            raise
        raise error from e
    finally:
        shutil.rmtree(errors, ignore_errors=True)
        if saved is None:
            del os.environ['OMP_NUM_THREADS']
        else:
            os.environ['OMP_NUM_THREADS'] = saved
