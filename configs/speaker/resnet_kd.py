"""Speaker verification: ResNet34 with attentive statistics pooling, AAM-softmax.

Stages (each in ``WORKDIR/<stage>``, each resumable):
  plain     the ResNet-ASP student trained with AAM-softmax alone (distillation weight 0).

Data: every labelled speaker of the data root's speech corpora (LibriSpeech test-other, the
spoken digits, CMU ARCTIC, speechocean762; the GRID talkers are not used: their audio is in
MPEG video files), split speaker-disjoint 80/10/10, stratified by gender and age; 2 s random
crops at 16 kHz, speed 0.9–1.1, real noise at 0–15 dB SNR on 60 % of the crops and real
reverberation on 30 %.

``evaluate.py --workdir WORKDIR`` writes the test trial list to ``WORKDIR/<stage>/trials/`` and
tabulates EER and minDCF (p_target 0.01) with cosine scoring and AS-norm.

Variants:
  ""       ResNet34 (width 32, 7.3 M parameters), batch 128, SGD with Nesterov momentum,
           20 000 steps, margin warm-up from step 2 000 to 6 000, utterances up to 10 s in
           evaluation.
  "smoke"  a thin ResNet (one block per stage, width 8), batch 16, Adam, 240 steps: the stage
           trains in minutes on a 2-core CPU; evaluation on 4 utterances per test speaker cut
           to 4 s.
"""

import dataclasses

from jaxspeech.data import UtteranceDataConfig
from jaxspeech.errors import ConfigError
from jaxspeech.models.speaker import RESNET34, SpeakerNetConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.stages import MultiStage, Stage
from jaxspeech.train.tasks.speaker import SpeakerConfig, SpeakerEvalConfig, SpeakerModelConfig

VARIANTS = ("", "smoke")
SPEECH = ("librispeech/test-other", "fsdd/recordings", "arctic", "speechocean762")
#: Training speakers of SPEECH under the 80/10/10 split with seed 0.
TRAIN_SPEAKERS = 174


def student_config(variant: str) -> SpeakerConfig:
    """The student's settings (the plain student: distillation weight 0)."""
    config = SpeakerConfig(
        model=SpeakerModelConfig(
            net=RESNET34, num_speakers=TRAIN_SPEAKERS, margin_warmup=(2000, 6000)
        ),
        data=UtteranceDataConfig(
            speech=SPEECH,
            noise="noise",
            rir="rir",
            sample_rate=16000,
            crop_seconds=2.0,
            speed_range=(0.9, 1.1),
            noise_snr_db_range=(0.0, 15.0),
            noise_prob=0.6,
            reverb_prob=0.3,
            split_fractions=(0.8, 0.1, 0.1),
        ),
        eval=SpeakerEvalConfig(),
        optim=OptimConfig(
            name="sgd-nesterov", learning_rate=0.1, momentum=0.9, weight_decay=1e-4, clip_norm=5.0
        ),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=1000, final_factor=5e-4),
        train=TrainConfig(
            steps=20_000, batch_size=128, checkpoint_every=1000, eval_every=1000, log_every=100
        ),
    )
    if variant != "smoke":
        return config
    return dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model,
            net=SpeakerNetConfig(blocks=(1, 1, 1, 1), width=8),
            margin_warmup=(40, 120),
        ),
        eval=SpeakerEvalConfig(
            utterances_per_speaker=4,
            max_seconds=4.0,
            batch_size=16,
            cohort_utterances_per_speaker=2,
        ),
        optim=OptimConfig(name="adam", learning_rate=3e-3, clip_norm=5.0),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=20, final_factor=0.1),
        train=TrainConfig(
            steps=240, batch_size=16, checkpoint_every=80, eval_every=80, log_every=20
        ),
    )


def get_config(variant: str = "") -> MultiStage:
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; use one of {VARIANTS}")
    return MultiStage((Stage("plain", student_config(variant)),))
