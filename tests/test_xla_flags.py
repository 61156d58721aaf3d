"""XLA:CPU training options: a user's own XLA_FLAGS are kept, and the options change the
compiled speaker network (convolutions leave YNNPACK) but not its gradients."""

import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from jaxspeech.models.speaker import SpeakerNet, SpeakerNetConfig
from jaxspeech.xla_flags import TRAINING_FLAGS, training_xla_flags, use_training_xla_flags

OURS = " ".join(TRAINING_FLAGS)


def test_flags_are_added_after_the_users_own():
    assert training_xla_flags("") == OURS
    assert training_xla_flags(" --xla_force_host_platform_device_count=8 ") == (
        f"--xla_force_host_platform_device_count=8 {OURS}"
    )
    env = {}
    use_training_xla_flags(env)
    use_training_xla_flags(env)  # a second call (e.g. after a restart) adds nothing
    assert env == {"XLA_FLAGS": OURS}


def test_a_users_own_ynnpack_choice_is_kept():
    own = "--xla_dump_to=/tmp/x --xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
    assert training_xla_flags(own) == own


def speaker_gradients(out: str) -> None:
    """Saves to ``out`` (npz) the parameter gradients of a small speaker net's squared
    embedding norm, the number of YNNPACK fusions in its compiled program and the device
    count. (32 channels: XLA hands narrower convolutions to Eigen anyway.)"""
    cfg = SpeakerNetConfig(blocks=(1,), width=32, embed_dim=8, attention_dim=8, n_mels=8)
    net = SpeakerNet(cfg)
    feats = np.random.default_rng(0).standard_normal((2, 16, 8)).astype(np.float32)
    mask = np.ones((2, 16), bool)
    variables = net.init(jax.random.key(0), feats, mask)

    def loss(params):
        return (net.apply({**variables, "params": params}, feats, mask) ** 2).sum()

    grad = jax.jit(jax.grad(loss)).lower(variables["params"]).compile()
    leaves = [np.asarray(x) for x in jax.tree.leaves(grad(variables["params"]))]
    np.savez(
        out,
        *leaves,
        ynn_fusions=grad.as_text().count("__ynn_fusion"),
        devices=jax.device_count(),
    )


def test_training_flags_change_the_program_not_the_gradients(tmp_path):
    speaker_gradients(tmp_path / "default.npz")
    env = dict(os.environ, XLA_FLAGS=training_xla_flags(os.environ.get("XLA_FLAGS", "")))
    tests = pathlib.Path(__file__).parent
    code = (
        f"import sys; sys.path.insert(0, {str(tests)!r}); "
        f"from test_xla_flags import speaker_gradients; "
        f"speaker_gradients({str(tmp_path / 'flagged.npz')!r})"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    default, flagged = np.load(tmp_path / "default.npz"), np.load(tmp_path / "flagged.npz")
    assert flagged["devices"] == default["devices"] == 8  # conftest's XLA_FLAGS survived
    assert flagged["ynn_fusions"] < default["ynn_fusions"]
    names = [k for k in default.files if k.startswith("arr_")]
    assert len(names) >= 9  # 3 convs, 3 batch norms' scale and bias, pooling, embedding
    # one scale for all: the attention logits' bias has a zero gradient (softmax over time)
    scale = max(np.abs(default[name]).max() for name in names)
    for name in names:
        np.testing.assert_allclose(flagged[name], default[name], rtol=0, atol=1e-5 * scale)
