"""`load_asteroid_state_dict` against the parameter names and shapes Asteroid 0.7.0 really uses.

`fixtures/asteroid_convtasnet_params.json` was written by Asteroid itself
(`fixtures/make_asteroid_params.py`): `ConvTasNet(...).state_dict()` names and shapes for
non-causal and causal configs, with and without skip convs, for 2 and 3 sources. The tests
fill those names with random arrays, so they need no torch; the numerical parity with
Asteroid's forward pass is `test_tasnet.py::test_parity_with_asteroid_*` (parity extra).
"""

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxspeech.errors import ConfigError
from jaxspeech.models.tasnet import ConvTasNet, ConvTasNetConfig, load_asteroid_state_dict
from jaxspeech.models.tcn import TCNConfig

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "asteroid_convtasnet_params.json"
CONFIGS = json.loads(FIXTURE.read_text())["configs"]
IDS = [config["name"] for config in CONFIGS]

#: Asteroid's `norm_type` -> our `norm` (the names differ; see `jaxspeech.models.tcn`).
NORM_NAMES = {"gLN": "gLN", "cgLN": "cLN", "cLN": "chanLN"}


def unique_state_dict(shapes: dict, seed: int) -> dict[str, np.ndarray]:
    """float32 arrays of `shapes` whose values are distinct integers across all arrays, so
    every converted value tells which Asteroid tensor and element it came from."""
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    values = np.random.default_rng(seed).permutation(sum(sizes)).astype(np.float32)
    parts = np.split(values, np.cumsum(sizes)[:-1])
    return {
        name: part.reshape(shape) for (name, shape), part in zip(shapes.items(), parts, strict=True)
    }


def jaxspeech_config(settings: dict) -> ConvTasNetConfig:
    """The fixture's flat jaxspeech settings as a model config."""
    tcn_fields = {f.name for f in dataclasses.fields(TCNConfig)}
    tcn = TCNConfig(**{k: v for k, v in settings.items() if k in tcn_fields})
    return ConvTasNetConfig(tcn=tcn, **{k: v for k, v in settings.items() if k not in tcn_fields})


def model_shapes(config: ConvTasNetConfig) -> dict[str, tuple[int, ...]]:
    model = ConvTasNet(config)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, config.filter_length)))
    return {
        path: leaf.shape for path, leaf in traverse_util.flatten_dict(abstract, sep="/").items()
    }


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_fixture_configs_describe_the_same_architecture(config):
    theirs, model = config["asteroid"], jaxspeech_config(config["jaxspeech"])
    tcn = model.tcn
    assert theirs["fb_name"] == "FreeFB" and theirs["encoder_activation"] is None
    assert theirs["mask_act"] == model.mask_activation
    assert (theirs["n_filters"], theirs["kernel_size"]) == (model.n_filters, model.filter_length)
    assert theirs["stride"] == model.filter_length // 2
    assert (theirs["bn_chan"], theirs["hid_chan"], theirs["skip_chan"]) == (
        tcn.bottleneck_channels,
        tcn.hidden_channels,
        tcn.skip_channels,
    )
    assert (theirs["conv_kernel_size"], theirs["n_blocks"], theirs["n_repeats"]) == (
        tcn.kernel_size,
        tcn.blocks,
        tcn.repeats,
    )
    assert (theirs["n_src"], theirs["causal"]) == (model.n_src, tcn.causal)
    assert NORM_NAMES[theirs["norm_type"]] == (tcn.norm or "gLN")


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_every_asteroid_tensor_becomes_one_param(config):
    state_dict = unique_state_dict(config["state_dict"], seed=len(config["state_dict"]))
    owner = {float(v): name for name, array in state_dict.items() for v in array.ravel()}
    converted = load_asteroid_state_dict(state_dict, jaxspeech_config(config["jaxspeech"]))
    flat = traverse_util.flatten_dict(converted, sep="/")

    expected_shapes = model_shapes(jaxspeech_config(config["jaxspeech"]))
    assert {path: leaf.shape for path, leaf in flat.items()} == expected_shapes
    assert all(leaf.dtype == jnp.float32 for leaf in flat.values())
    assert sum(int(np.prod(s)) for s in expected_shapes.values()) == sum(
        array.size for array in state_dict.values()
    )

    sources = {}
    for path, leaf in flat.items():
        values = np.asarray(leaf).ravel()
        names = {owner[float(v)] for v in values}
        assert len(names) == 1, f"{path} mixes {sorted(names)}"
        (name,) = names
        source = state_dict[name]
        np.testing.assert_array_equal(np.sort(values), np.sort(source.ravel()), err_msg=path)
        # torch stores convs [out, in, k] and flax [in, out]: a 2-D param is the torch weight
        # without its unit axis, transposed; the decoder (a transposed conv, torch [N, 1, L])
        # is already [N, L].
        if leaf.ndim == 2:
            squeezed = np.squeeze(source)
            layout = squeezed if path == "params/decoder_filters" else squeezed.T
            np.testing.assert_array_equal(np.asarray(leaf), layout, err_msg=path)
        sources[path] = name
    assert sorted(sources.values()) == sorted(state_dict), "some Asteroid tensors unused or reused"
    assert sources["params/encoder_filters"] == "encoder.filterbank._filters"
    assert sources["params/decoder_filters"] == "decoder.filterbank._filters"
    assert sources["params/mask_conv/kernel"] == "masker.mask_net.1.weight"


@pytest.mark.parametrize("config", CONFIGS, ids=IDS)
def test_missing_extra_or_misshaped_names_are_refused(config):
    state_dict = unique_state_dict(config["state_dict"], seed=0)
    settings = config["jaxspeech"]
    ours = jaxspeech_config(settings)
    dropped = sorted(state_dict)[len(state_dict) // 2]
    missing = {name: a for name, a in state_dict.items() if name != dropped}
    with pytest.raises(ConfigError, match=rf"missing \['{dropped}'\]"):
        load_asteroid_state_dict(missing, ours)

    blocks = settings["blocks"] * settings["repeats"]
    stray = f"masker.TCN.{blocks}.res_conv.bias"  # one block more than the config has
    extra = {**state_dict, stray: np.zeros(settings["bottleneck_channels"], np.float32)}
    with pytest.raises(ConfigError, match=rf"unexpected \['{stray}'\]"):
        load_asteroid_state_dict(extra, ours)

    with pytest.raises(ConfigError, match="missing"):
        more = {**settings, "repeats": settings["repeats"] + 1}
        load_asteroid_state_dict(state_dict, jaxspeech_config(more))

    misshaped = {**state_dict, "masker.bottleneck.1.bias": np.zeros(9, np.float32)}
    with pytest.raises(ConfigError, match=r"masker\.bottleneck\.1\.bias"):
        load_asteroid_state_dict(misshaped, ours)


def test_causal_and_non_causal_names_differ():
    """Asteroid's causal depthwise conv sits in a Sequential with its chop layer (`.3.0`); the
    other layout's names are refused."""
    by_name = {config["name"]: config for config in CONFIGS}
    causal, non_causal = by_name["causal-cgLN-2src"], by_name["gLN-2src"]
    assert "masker.TCN.0.shared_block.3.0.weight" in causal["state_dict"]
    assert "masker.TCN.0.shared_block.3.weight" in non_causal["state_dict"]
    state_dict = unique_state_dict(non_causal["state_dict"], seed=1)
    with pytest.raises(ConfigError, match=r"shared_block\.3\.0"):
        causal_settings = {**non_causal["jaxspeech"], "causal": True, "norm": "cLN"}
        load_asteroid_state_dict(state_dict, jaxspeech_config(causal_settings))
