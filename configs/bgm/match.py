"""Speech <-> background-music matching on the demonstration labelling of ``../shared/data``.

The fit labels are a demonstration, not ground truth (``jaxspeech.data.bgm``): a child's voice
(speechocean762 speakers under 13) or an adult's read narration (speechocean762 speakers
aged 18 or more, LibriSpeech) against GTZAN clips, the fit given by the genre:

| genre | blues | classical | country | disco | hiphop | jazz | metal | pop | reggae | rock |
|---|---|---|---|---|---|---|---|---|---|---|
| child | 0.2 | 0.5 | 0.5 | 0.8 | 0.2 | 0.2 | 0.0 | 1.0 | 0.8 | 0.2 |
| adult narration | 0.7 | 1.0 | 0.5 | 0.1 | 0.1 | 0.9 | 0.0 | 0.3 | 0.3 | 0.2 |

Every recording is paired with every clip; speakers and clips are split 70/10/20 % each, and
only pairs whose two sides share a split are kept, so no test speaker or test clip is seen in
training. The model reads the audio's descriptors only (12 s centred clips at 22.05 kHz, 3 s
segments every 1.5 s, every descriptor family), never names or metadata.
To train on labelled pairs of one's own, write a recipe with ``BGMDataConfig(csv=...,
demonstration=None)`` (the CSV format is in ``jaxspeech.data.pairs``).

Variants:
  ""       every utterance of every speaker (1,300 recordings x 70 clips), tower of two
           convolutions of 64 channels, 20,000 steps of 64 pairs.
  "smoke"  one utterance per speaker (195 recordings), 1,500 steps: minutes on 2 CPU cores,
           most of them computing the descriptors.
"""

import dataclasses

from jaxspeech.data.bgm import BGMDataConfig, DemonstrationConfig
from jaxspeech.models.bgm import BGMConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.tasks.bgm import BGMEvalConfig, BGMTaskConfig

VARIANTS = ("", "smoke")


def get_config(variant: str = "") -> BGMTaskConfig:
    config = BGMTaskConfig(
        model=BGMConfig(),
        data=BGMDataConfig(
            demonstration=DemonstrationConfig(),
            sample_rate=22050,
            graded_labels=True,
            disjoint="each",
            split_fractions=(0.7, 0.1, 0.2),
        ),
        eval=BGMEvalConfig(),
        optim=OptimConfig(name="adamw", learning_rate=1e-3, weight_decay=1e-4, clip_norm=5.0),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=200, final_factor=0.05),
        train=TrainConfig(
            steps=20_000, batch_size=64, checkpoint_every=1000, eval_every=500, log_every=100
        ),
    )
    if variant == "smoke":
        config = dataclasses.replace(
            config,
            data=dataclasses.replace(
                config.data, demonstration=DemonstrationConfig(utterances_per_speaker=1)
            ),
            schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=50, final_factor=0.05),
            train=TrainConfig(
                steps=1500, batch_size=64, checkpoint_every=250, eval_every=250, log_every=50
            ),
        )
    return config
