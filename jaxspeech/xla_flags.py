"""XLA:CPU options of a training process, added to ``XLA_FLAGS`` before JAX starts a backend.

jaxlib 0.10 hands every large float32 convolution on CPU to YNNPACK. Its kernel gradient, a
convolution whose window spans the whole feature map, takes twice as long as XLA's own (Eigen)
convolution on the 2-core Xeon of ``bench/RESULTS.md`` (a 3×3 32→32 convolution on
``[16, 200, 80, 32]``: 0.66 s against 0.32 s; forward and input gradient take the same time on
either; ``bench/conv_flags.py``), and the ResNet34 speaker training step is 1.41× faster
without YNNPACK's convolutions. ``TRAINING_FLAGS`` therefore takes convolutions (only them)
away from YNNPACK; it changes nothing but CPU convolutions (not GPU or TPU programs, not a
model without convolutions, such as Conv-TasNet here), and their results only by float
rounding.

A user's own ``XLA_FLAGS`` are kept, and one that already chooses YNNPACK's fusion types
(e.g. ``--xla_cpu_experimental_ynn_fusion_type=+individual_convolution`` to keep YNNPACK
convolutions) is left as it is.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
TRAINING_FLAGS = (f"{YNN_FUSION_FLAG}=-individual_convolution",)


def training_xla_flags(xla_flags: str) -> str:
    """``xla_flags`` (a ``XLA_FLAGS`` value) with ``TRAINING_FLAGS`` appended, unless it sets
    the YNNPACK fusion types itself."""
    if YNN_FUSION_FLAG in xla_flags:
        return xla_flags
    return " ".join([xla_flags.strip(), *TRAINING_FLAGS]).strip()


def use_training_xla_flags(env: MutableMapping[str, str] = os.environ) -> None:
    """Sets ``env["XLA_FLAGS"]`` to ``training_xla_flags`` of its value. XLA reads the variable
    once, when JAX starts its first backend: call this before any JAX computation (importing
    jax is fine)."""
    env["XLA_FLAGS"] = training_xla_flags(env.get("XLA_FLAGS", ""))
