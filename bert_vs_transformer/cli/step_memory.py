"""`bvt-benchmark --memory`: the train step's per-device memory and FLOPs, from compiling it alone.

Nothing is allocated: the state and batch are abstract (shapes and shardings), so a CPU with
`JAX_NUM_CPU_DEVICES=N` (or `--xla_force_host_platform_device_count=N`) sizes an N-device mesh's
step before the accelerators are rented. The numbers are those of the backend that compiles: XLA's
CPU and GPU compilers fuse and schedule differently, so compile on the target kind for exact bytes.
"""

from __future__ import annotations

from typing import Any

import jax

from bert_vs_transformer import tasks
from bert_vs_transformer.models import partitioning
from bert_vs_transformer.training import optim, train_step


def memory_record(config) -> dict[str, Any]:
    """Compiles the prepared config's train step on its mesh -> one record of per-device bytes and GFLOPs."""
    task = tasks.get_task(config)
    batch_size, accum = int(config.data.batch_size), int(config.grad_accum_steps)
    mesh = partitioning.make_mesh(config.mesh)
    partitioning.check_batch_size(batch_size, mesh)
    partitioning.check_batch_size(batch_size // accum, mesh, "batch_size / grad_accum_steps")
    tx, schedule = optim.make_optimizer(config.optimizer, config.model.d_model, config.num_train_steps)
    state, shardings = train_step.abstract_state(task, tx, batch_size, config.seed, mesh)
    sharding = partitioning.batch_sharding(mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=sharding) for k, v in task.dummy_batch(batch_size).items()}
    step = train_step.compile_train_step(train_step.make_train_step(task, tx, schedule, accum), shardings, mesh)
    with partitioning.activate(mesh):
        compiled = step.jitted.lower(state, batch, jax.random.PRNGKey(0)).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    device = jax.devices()[0]
    return {
        "mode": "memory",
        "task": config.task,
        "variant": config.get("variant", None),
        "batch_size": batch_size,
        **task.lengths(),
        "grad_accum_steps": accum,
        "remat_policy": config.model.remat_policy,
        "scan_layers": bool(config.model.scan_layers),
        "compute_dtype": config.model.dtype,
        # Per device: the step's program is the same on every device of the mesh.
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes),  # outputs written in place of donated arguments
        "temp_bytes": int(mem.temp_size_in_bytes),
        "peak_estimate_bytes": int(mem.argument_size_in_bytes + mem.output_size_in_bytes
                                   - mem.alias_size_in_bytes + mem.temp_size_in_bytes),
        # XLA's count for one device's program; a loop's body counts once (scan_layers: one layer).
        "hlo_gflops": float(cost.get("flops", 0.0)) / 1e9,
        "model_gflops_per_device": task.step_flops(batch_size) / jax.device_count() / 1e9,
        "device_kind": device.device_kind,
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "mesh": dict(zip(mesh.axis_names, (int(s) for s in mesh.devices.shape))),
        "jax_version": jax.__version__,
    }
