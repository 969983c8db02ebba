"""Test setup: 8 simulated CPU devices, JAX's persistent compilation cache, no network."""

import os

# Must precede any JAX backend initialisation.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite is compile-bound (tiny models, a few steps each): XLA's CPU backend at -O0 compiles faster.
# Clean clone, 2-core CPU: 898 s against 1,047 s at the default level (2) and 958 s at 1; the few
# compute-bound tests run slower (the Multi30k training test 49 s against 37). Processes the tests
# start inherit it; an XLA_FLAGS that sets the level already is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
_CACHE = os.environ.get(
    "BVT_JAX_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def devices():
    devs = jax.devices()
    assert len(devs) == 8, f"expected 8 simulated CPU devices, got {devs}"
    return devs

