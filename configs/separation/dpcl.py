"""Deep clustering (Hershey et al. 2016, Isik et al. 2016) on the Conv-TasNet recipe's data.

The mixtures and speaker splits are those of ``convtasnet.py`` (same variant), and so are the
optimiser and schedule except in ``smoke``; the model changes: a BLSTM embeds every
time-frequency bin (32 ms window, 8 ms hop at 8 kHz) into D dimensions, trained with the
low-rank affinity loss with silent bins weighted out; k-means on the embeddings separates.

Variants:
  ""       4 BLSTM layers × 300 units per direction, D = 40.
  "wsj0-2mix"  the "" model on the wsj0-2mix corpus (``convtasnet.py:wsj0-2mix``'s data and
           schedule).
  "smoke"  2 layers × 64 units, D = 20, on the smoke recipe's 1 s mixtures, with Adam 1e-3
           at a constant rate for 1,500 steps: the settings of its README figure (Conv-TasNet's
           smoke warm-up and cosine decay were not measured on it).
"""

import dataclasses
import pathlib

from jaxspeech.models.dpcl import DeepClusteringConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.stages import load_recipe
from jaxspeech.train.tasks.separation import SeparationConfig

VARIANTS = ("", "smoke", "wsj0-2mix")
_CONVTASNET = pathlib.Path(__file__).with_name("convtasnet.py")


def get_config(variant: str = "") -> SeparationConfig:
    base = load_recipe(f"{_CONVTASNET}:{variant}")
    model = DeepClusteringConfig(n_src=base.model.n_src)
    if variant != "smoke":
        return dataclasses.replace(base, model=model)
    return dataclasses.replace(
        base,
        model=DeepClusteringConfig(n_src=base.model.n_src, embedding_dim=20, hidden=64, layers=2),
        optim=OptimConfig(name="adam", learning_rate=1e-3, clip_norm=5.0),
        schedule=ScheduleConfig(name="constant"),
        train=TrainConfig(
            steps=1500, batch_size=8, checkpoint_every=100, eval_every=100, log_every=20
        ),
    )
