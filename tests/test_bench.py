"""The benchmark's analytic FLOP counts against XLA's cost analysis of the same model."""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp

from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig
from jaxspeech.models.tcn import TCNConfig

BENCH = pathlib.Path(__file__).parent.parent / "bench" / "tasnet_speed.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("tasnet_speed", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forward_flops_match_xla_cost_analysis():
    """XLA counts every multiply-add of the convs plus the elementwise work (norms, PReLUs,
    masks), so its count is at or a little above the analytic one, which has the matmuls only."""
    bench = load_bench()
    config = dict(N=128, L=16, B=64, H=256, Sc=64, P=3, X=3, R=2, n_src=2)
    tcn = TCNConfig(
        bottleneck_channels=config["B"],
        hidden_channels=config["H"],
        skip_channels=config["Sc"],
        kernel_size=config["P"],
        blocks=config["X"],
        repeats=config["R"],
    )
    model = ConvTasNet(
        ConvTasNetConfig(
            n_src=config["n_src"], n_filters=config["N"], filter_length=config["L"], tcn=tcn
        )
    )
    mixture = jnp.zeros((1, bench.SAMPLE_RATE))  # one second
    params = jax.eval_shape(model.init, jax.random.key(0), mixture)
    xla_flops = jax.jit(model.apply).lower(params, mixture).compile().cost_analysis()["flops"]
    analytic = bench.inference_flops_per_second(config)
    assert 1.0 <= xla_flops / analytic <= 1.25
