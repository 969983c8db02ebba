"""Device mesh, logical axis rules, shardings of state and batches.

Models only name their axes (layers.py); this module alone maps names onto the mesh
(`data`, `fsdp`, `tensor`), as t5x's `standard_logical_axis_rules`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or axes). A mesh axis is used at most once per array: activations
# ('batch', 'length', 'embed') take batch -> (data, fsdp) and leave 'embed' unsharded, while
# parameters shard 'embed' over fsdp (ZeRO-3 style) and heads/mlp/vocab over tensor (Megatron).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("position", None),
    ("token_type", None),
    ("classes", None),
)


def mesh_shape(mesh_config: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Axis sizes from config.mesh ({'data','fsdp','tensor'}); one -1 fills the rest."""
    unknown = sorted(set(mesh_config) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"config.mesh has unknown axes {unknown}; expected {MESH_AXES}")
    sizes = [int(mesh_config.get(a, 1)) for a in MESH_AXES]
    fills = [i for i, s in enumerate(sizes) if s == -1]
    if len(fills) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh: sizes must be positive or -1, got {dict(zip(MESH_AXES, sizes))}")
    known = int(np.prod([s for s in sizes if s != -1]))
    if fills:
        if num_devices % known:
            raise ValueError(
                f"config.mesh={dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not divisible by {known}"
            )
        sizes[fills[0]] = num_devices // known
    if int(np.prod(sizes)) != num_devices:
        raise ValueError(
            f"config.mesh={dict(zip(MESH_AXES, sizes))} has {int(np.prod(sizes))} devices but "
            f"{num_devices} are available"
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_config: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A (data, fsdp, tensor) mesh with Auto axes (linen models need Auto, not Explicit)."""
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(mesh_config, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


@contextlib.contextmanager
def activate(mesh: Mesh, rules=LOGICAL_AXIS_RULES):
    """Context in which the models' logical activation constraints resolve against `mesh`."""
    if hasattr(jax, "set_mesh"):  # jax >= 0.7: sets the abstract mesh flax's constraints read
        mesh_context = jax.set_mesh(mesh)
    elif hasattr(jax.sharding, "use_mesh"):
        mesh_context = jax.sharding.use_mesh(mesh)
    else:
        mesh_context = mesh
    with mesh_context, nn.logical_axis_rules(rules):
        yield


def batch_shard_count() -> int:
    """How many data-parallel shards the logical 'batch' axis has on the active mesh (1 without one)."""
    mesh = jax.sharding.get_abstract_mesh()
    axes = nn.logical_to_mesh_axes(("batch",))[0]
    if mesh.empty or axes is None:
        return 1
    return int(np.prod([mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))


def logical_to_sharding(logical_specs: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def state_shardings(abstract_boxed_state: Any, mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> Any:
    """Shardings for a (boxed, abstract) train state: boxed leaves by their names, others replicated."""
    specs = nn.get_partition_spec(abstract_boxed_state)
    return logical_to_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split along their leading axis over data x fsdp."""
    return NamedSharding(mesh, P(("data", "fsdp")))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(global_batch: int, mesh: Mesh, field: str = "config.data.batch_size") -> None:
    dp = data_parallel_size(mesh)
    if global_batch % dp:
        raise ValueError(
            f"{field}={global_batch} is not divisible by the data-parallel size {dp} "
            f"(mesh data={mesh.shape['data']} x fsdp={mesh.shape['fsdp']})"
        )
    if global_batch % jax.process_count():
        raise ValueError(f"{field}={global_batch} is not divisible by the {jax.process_count()} processes")


def global_batch_from_local(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Each process's slice of the global batch -> global arrays sharded over data x fsdp."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()
    }
