"""Data-parallel SPMD over a 1-D device mesh (axis ``"data"``), from one CPU to a pod.

A step is written per replica and wrapped by :func:`data_parallel` in ``jax.shard_map``:
replicated arguments (params, optimiser state) use ``P()``, batches are split along their
leading axis with ``P("data")``, and the per-replica code averages gradients, metrics and
batch-norm state with ``lax.pmean(..., DATA_AXIS)``. The whole step runs under ``jax.jit``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def _cluster_in_environment() -> bool:
    """True when environment variables describe a multi-process job (Slurm, TPU pod, JAX)."""
    env = os.environ
    return (
        int(env.get("SLURM_NTASKS", "1") or 1) > 1
        or "JAX_COORDINATOR_ADDRESS" in env
        or len(env.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
        or "MEGASCALE_COORDINATOR_ADDRESS" in env
    )


def maybe_initialize_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls ``jax.distributed.initialize`` for a multi-process job; returns whether it did.

    Explicit arguments win (``coordinator="host:port"``); otherwise JAX's cluster
    auto-detection runs when the environment describes a cluster. Must run before any other
    JAX call touches the devices. On CPU, cross-process collectives use gloo (JAX's default).
    """
    if coordinator is not None or num_processes is not None or process_id is not None:
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num_processes, process_id=process_id
        )
        return True
    if _cluster_in_environment():
        jax.distributed.initialize()
        return True
    return False


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """1-D mesh with axis ``"data"`` over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh(
        (len(devices),),
        (DATA_AXIS,),
        axis_types=(jax.sharding.AxisType.Auto,),
        devices=devices,
    )


def shard_batch(mesh: Mesh, local_batch: Any) -> Any:
    """Assembles the global batch from each process's rows (leading axis split over ``data``).

    ``local_batch``: pytree of numpy arrays ``[global_batch // process_count, ...]``.
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places a pytree of host values (equal on every process) on all devices of ``mesh``."""
    sharding = NamedSharding(mesh, P())
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def local_rows(global_batch: Any) -> Any:
    """This process's contiguous share of a global host batch (pytree, leading axis)."""
    index, count = jax.process_index(), jax.process_count()

    def take(x: np.ndarray) -> np.ndarray:
        per_process = x.shape[0] // count
        return x[index * per_process : (index + 1) * per_process]

    return jax.tree.map(take, global_batch)


def data_parallel(
    per_replica: Callable[..., Any],
    mesh: Mesh,
    *,
    sharded_argnums: Sequence[int],
    num_args: int,
    donate_argnums: Sequence[int] = (),
) -> Callable[..., Any]:
    """Wraps ``per_replica`` in ``shard_map`` over ``data`` and ``jit``.

    Arguments in ``sharded_argnums`` are split along their leading axis (``P("data")``), the
    others replicated (``P()``); all outputs are replicated, so ``per_replica`` must make them
    equal across replicas (``lax.pmean(x, DATA_AXIS)``): gradients arrive per replica, as
    under ``pmap``, and are averaged explicitly.
    """
    in_specs = tuple(P(DATA_AXIS) if i in sharded_argnums else P() for i in range(num_args))
    # check_vma=False gives pmap semantics: gradients of replicated params stay per-replica
    # until the explicit pmean (with check_vma=True JAX would psum them implicitly).
    mapped = jax.shard_map(
        per_replica, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=False
    )
    return jax.jit(mapped, donate_argnums=tuple(donate_argnums))


def pmean_floats(tree: Any) -> Any:
    """``lax.pmean`` over ``data`` of every inexact leaf (integer leaves pass through)."""
    return jax.tree.map(
        lambda x: jax.lax.pmean(x, DATA_AXIS) if jax.numpy.issubdtype(x.dtype, np.inexact) else x,
        tree,
    )
