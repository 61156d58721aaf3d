"""Conv-TasNet (Luo & Mesgarani 2019) on on-the-fly two-speaker mixtures.

Variants:
  ""        paper configuration (N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, gLN),
            4 s crops at 8 kHz, every training source played at a speed drawn from 0.8–1.2
            (more voices from few speakers), Adam 1e-3, clipping at 5, halve the rate after 3
            validations without improvement.
  "causal"  the same with causal convolutions and cumulative layer norm.
  "smoke"   a small model (8 blocks of 64 channels in one repeat: 0.5 s receptive field) on
            1 s crops, batch 8, Adam 3e-3 with 100 warm-up steps and a cosine decay to zero,
            2,000 steps: 3 min 56 s of training on the idle 2-core CPU (the CI's run of the
            README's first command).
  "cpu"     the same at 128 channels (bottleneck and skip 64; 236,113 parameters) for 18,000
            steps (18 validations), with one training mixture in ten holding one speaker
            alone (the other track's target silent), so that a lone voice is not split over
            the two tracks: 64 min 20 s of training on the 2-core CPU with the test suite
            beside it, best validation SI-SNRi 7.06 dB at step 15,000 (8.39 dB at 18,000
            without lone speakers, whose step-4,000 checkpoint split 4 of 4 lone voices).
Both small variants are tested on 256 mixtures of the test speakers.

Pre-mixed corpora (the paper's model and optimiser as in ""; 4 s crops of the training split's
mixtures, shorter ones left out; validation on 256 crops of the validation split, one
validation per epoch at batch 8, the rate halved after 3 epochs without improvement, 100
epochs; tested on every whole mixture of the test split):
  "librimix"   Libri2Mix ``wav8k/min`` ``mix_clean`` below the data root (``Libri2Mix/``),
               train-360 / dev / test.
  "wsj0-2mix"  wsj0-2mix ``wav8k/min`` below the data root (``wsj0-2mix/``: the
               ``2speakers`` folder the official scripts write), tr / cv / tt.
Point ``--config.data.root`` at the folder holding them (``--config.data.corpus`` names
another folder).
"""

import dataclasses

from jaxspeech.data import MixtureConfig, MixtureDataConfig
from jaxspeech.data.premixed import PremixedDataConfig
from jaxspeech.models.tasnet import ConvTasNetConfig
from jaxspeech.models.tcn import TCNConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.tasks.separation import SeparationConfig, SeparationEvalConfig

VARIANTS = ("", "causal", "smoke", "cpu", "librimix", "wsj0-2mix")
#: The share of the ``cpu`` variant's training mixtures that hold one speaker alone.
LONE_SPEAKER_PROB = 0.1
#: Pre-mixed corpora: (folder below the data root, training mixtures per epoch).
CORPORA = {"librimix": ("Libri2Mix", 50_800), "wsj0-2mix": ("wsj0-2mix", 20_000)}


def get_config(variant: str = "") -> SeparationConfig:
    config = SeparationConfig(
        model=ConvTasNetConfig(n_src=2),
        data=MixtureDataConfig(
            speech=("librispeech", "fsdd/recordings", "speechocean762", "arctic"),
            mixture=MixtureConfig(sample_rate=8000, segment_seconds=4.0, speed_range=(0.8, 1.2)),
            split_fractions=(0.8, 0.1, 0.1),
        ),
        eval=SeparationEvalConfig(),
        optim=OptimConfig(name="adam", learning_rate=1e-3, clip_norm=5.0),
        schedule=ScheduleConfig(name="constant", plateau_patience=3, plateau_factor=0.5),
        train=TrainConfig(
            steps=200_000, batch_size=8, checkpoint_every=2000, eval_every=2000, log_every=100
        ),
    )
    if variant == "causal":
        tcn = dataclasses.replace(config.model.tcn, causal=True, norm="cLN")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, tcn=tcn))
    if variant == "smoke":
        config = _small(config, channels=64, steps=2000, validations=20)
    if variant == "cpu":
        config = _small(config, channels=128, steps=18000, validations=18)
        mixture = dataclasses.replace(config.data.mixture, lone_speaker_prob=LONE_SPEAKER_PROB)
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, mixture=mixture))
    if variant in CORPORA:
        config = _premixed(config, *CORPORA[variant])
    return config


def _premixed(config: SeparationConfig, folder: str, mixtures: int) -> SeparationConfig:
    """The paper's training on a pre-mixed corpus: one validation (and checkpoint) per epoch of
    ``mixtures`` at batch 8, 100 epochs; the rate halves after 3 epochs without improvement."""
    epoch = mixtures // config.train.batch_size
    return dataclasses.replace(
        config,
        data=PremixedDataConfig(
            corpus=folder, sample_rate=8000, segment_seconds=4.0, valid_size=256
        ),
        train=dataclasses.replace(
            config.train, steps=100 * epoch, checkpoint_every=epoch, eval_every=epoch
        ),
    )


def _small(
    config: SeparationConfig, channels: int, steps: int, validations: int
) -> SeparationConfig:
    """One repeat of 8 blocks (0.5 s receptive field) with ``channels`` hidden channels and
    filters (bottleneck and skip half as many) on 1 s crops, batch 8: Adam 3e-3 with 100 warm-up
    steps and a cosine decay to zero over ``steps``; validated on 32 mixtures (tested on 256) and
    checkpointed ``validations`` times."""
    half = channels // 2
    return dataclasses.replace(
        config,
        model=ConvTasNetConfig(
            n_src=2,
            n_filters=channels,
            tcn=TCNConfig(
                bottleneck_channels=half,
                hidden_channels=channels,
                skip_channels=half,
                blocks=8,
                repeats=1,
            ),
        ),
        data=dataclasses.replace(
            config.data,
            mixture=dataclasses.replace(config.data.mixture, segment_seconds=1.0),
            valid_size=32,
        ),
        eval=dataclasses.replace(config.eval, size=256),
        optim=dataclasses.replace(config.optim, learning_rate=3e-3),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=100, final_factor=0.0),
        train=TrainConfig(
            steps=steps,
            batch_size=8,
            checkpoint_every=steps // validations,
            eval_every=steps // validations,
            log_every=20,
        ),
    )
