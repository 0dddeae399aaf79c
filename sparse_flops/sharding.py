"""Device mesh, shardings and multi-host start-up. JAX itself is the distributed engine.

The batch is sharded along the mesh's ``data`` axis; parameters and optimiser state are
replicated, or (``config.mesh.param_sharding = 'fsdp'``) each large array is split along its
largest axis that the mesh divides. The step is jitted with these shardings, so reductions over
the batch axis (the FLOPs and L1 penalties, BatchNorm statistics, metrics) are global.
"""

from __future__ import annotations

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")
# Arrays smaller than this stay replicated under fsdp: splitting them saves nothing.
_FSDP_MIN_SIZE = 1024


def make_mesh(mesh_config) -> Mesh:
    """A 1-D mesh over ``config.mesh.data`` devices (``-1``: all devices of all processes)."""
    devices = jax.devices()
    n = mesh_config.data if mesh_config.data > 0 else len(devices)
    if n > len(devices):
        raise ValueError(
            f"config.mesh.data={mesh_config.data} asks for more devices than the {len(devices)} "
            "available; lower it or use -1 for all"
        )
    if mesh_config.param_sharding not in PARAM_SHARDINGS:
        raise ValueError(
            f"config.mesh.param_sharding={mesh_config.param_sharding!r}; choose one of "
            f"{PARAM_SHARDINGS}"
        )
    # Auto axes: XLA propagates shardings from the jit boundaries (no sharding-in-types).
    return jax.make_mesh(
        (n,), (DATA,), axis_types=(jax.sharding.AxisType.Auto,), devices=devices[:n]
    )


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA))


def _fsdp_spec(shape, n: int) -> P:
    if int(np.prod(shape, dtype=np.int64)) < _FSDP_MIN_SIZE:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
        if shape[axis] % n == 0:
            spec = [None] * len(shape)
            spec[axis] = DATA
            return P(*spec)
    return P()


def state_shardings(abstract_state, mesh: Mesh, mode: str = "replicated"):
    """A pytree of shardings for a (possibly abstract) train state."""
    n = mesh.shape[DATA]
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)
    if mode == "fsdp":
        return jax.tree.map(lambda x: NamedSharding(mesh, _fsdp_spec(x.shape, n)), abstract_state)
    raise ValueError(f"unknown param sharding {mode!r}; choose one of {PARAM_SHARDINGS}")


def check_batch(global_batch: int, mesh: Mesh, what: str = "config.train.batch_size") -> None:
    n = mesh.shape[DATA]
    if global_batch % n:
        raise ValueError(
            f"{what}={global_batch} is not divisible by the {n} devices of the data axis; "
            "choose a multiple or set config.mesh.data"
        )


def global_array(local, sharding: NamedSharding) -> jax.Array:
    """This process's rows ``local`` as its part of a global array with ``sharding``."""
    return jax.make_array_from_process_local_data(sharding, np.asarray(local))


def to_host(x: jax.Array) -> np.ndarray:
    """A fully replicated array as NumPy (works in multi-process runs too)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(x.addressable_data(0))


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Starts JAX's multi-host runtime. With no arguments JAX detects the cluster (SLURM, Cloud
    TPU, ...); otherwise all three must be given. Call once, before any JAX computation."""
    given = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError(
            "multi-host launch needs --coordinator_address, --num_processes and --process_id "
            "together (or none of them, to let JAX detect the cluster)"
        )
    # CPU hosts (tests, CPU clusters) need a collectives backend; accelerators ignore it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
    )
    logging.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
