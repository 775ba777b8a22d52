"""What this machine can do for training, and the settings a run derives from it.

Mixed precision, XLA and multi-device training are decided here from the config and
the detected hardware, never assumed: these machines are sometimes Intel with AMX,
sometimes AMD with AVX2 only, sometimes with GPUs.

- precision 'auto': mixed_float16 with a GPU; mixed_bfloat16 on a CPU whose
  /proc/cpuinfo flags hold amx_bf16 or avx512_bf16; float32 otherwise.
- jit_compile 'auto': on with a GPU, off on CPUs (XLA costs a compile per phase; its
  CPU gain is not yet measured: `python -m bench.quality --compare` measures it).
- devices: one job trains on N GPUs with tf.distribute.MirroredStrategy; each step
  takes batch_size images per device, so the global batch and the learning rate are
  multiplied by N (the linear scaling rule).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import keras
import tensorflow as tf

from imgclf.config import TrainConfig
from imgclf.cpu import cpu_has_bf16
from imgclf.errors import ConfigError


@dataclass(frozen=True)
class Plan:
    """How a run uses the hardware; recorded in the model card."""

    precision: str  # float32 | mixed_bfloat16 | mixed_float16
    jit_compile: bool
    replicas: int  # devices one step runs on
    device: str  # "cpu" or "gpu"
    global_batch_size: int
    learning_rate_scale: float

    def as_dict(self) -> dict:
        return {
            "precision": self.precision,
            "jit_compile": self.jit_compile,
            "replicas": self.replicas,
            "device": self.device,
            "global_batch_size": self.global_batch_size,
            "learning_rate_scale": self.learning_rate_scale,
        }


def plan(
    config: TrainConfig,
    *,
    gpus: int | None = None,
    flags: frozenset[str] | None = None,
) -> Plan:
    """Resolve config's 'auto' choices against the visible GPUs and the CPU's flags."""
    gpus = len(tf.config.list_logical_devices("GPU")) if gpus is None else gpus
    if config.precision == "auto":
        if gpus:
            precision = "mixed_float16"
        elif cpu_has_bf16(flags):
            precision = "mixed_bfloat16"
        else:
            precision = "float32"
    else:
        precision = config.precision
    if precision == "mixed_float16" and not gpus:
        raise ConfigError(
            "config field 'precision': mixed_float16 needs a GPU and none is visible "
            "(allowed on this machine: 'auto', 'float32', 'mixed_bfloat16')"
        )
    jit = gpus > 0 if config.jit_compile == "auto" else config.jit_compile == "on"
    if config.devices > max(gpus, 1):
        raise ConfigError(
            f"config field 'devices': {config.devices} requested but {gpus} GPU(s) are "
            "visible (allowed: 0 = all visible, or 1 to the number of visible GPUs)"
        )
    replicas = (config.devices or gpus) if gpus else 1
    return Plan(
        precision=precision,
        jit_compile=jit,
        replicas=replicas,
        device="gpu" if gpus else "cpu",
        global_batch_size=config.batch_size * replicas,
        learning_rate_scale=float(replicas),
    )


def strategy_for(run_plan: Plan, *, devices: list[str] | None = None) -> tf.distribute.Strategy:
    """MirroredStrategy over `replicas` devices, or the default (one device) strategy.

    `devices` names them explicitly (tests split the CPU into logical devices).
    """
    if devices is None and run_plan.replicas <= 1:
        return tf.distribute.get_strategy()
    if devices is None:
        names = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = names[: run_plan.replicas]
    return tf.distribute.MirroredStrategy(devices)


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under a mixed-precision policy without leaving it as the global default."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
