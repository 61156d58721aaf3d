"""Audio-visual enhancement: lip video tells the audio mask which bands are speech.

Stages (each in ``WORKDIR/<stage>``, resumable like every recipe):
  audio  Net 1, a causal LSTM mask estimator (the enhancement task) towards the IRM, on the
         AV corpus's own speech: the mixtures of the lips and gate stages below, from the
         TRAIN clips only (the same splits, so no valid or test clip is ever heard); frozen
         afterwards. The "…librispeech" variants train it on other speakers instead (noisy
         LibriSpeech, the enhancement recipe's data), the measured alternative;
  lips   Net 2, a per-frame CNN + causal LSTM on GRID mouth crops towards the band activity
         of the clean speech (16 bands; each band's level in the 40 dB below the clip's
         loudest frame, mapped onto 0…1);
  gate   Net 3, an LSTM gate over Net 1's mask and the lip band activity B; the output mask
         g·(B⊙IRM) + (1−g)·IRM is trained towards the IRM by mask MSE with Net 1's bin
         weights (the noisy energy), Nets 1 and 2 frozen.

Data for lips and gate: GRID clips (s1 split by sentence, the other talkers by talker), in
real noise at −5…20 dB or beside another talker's voice at −5…5 dB (half each).
``evaluate.py --workdir WORKDIR`` writes the table of every stage; the gate's compares noisy,
audio-only, audio-visual, AV with the video blanked and the oracle IRM per condition and SNR.

Variants:
  ""       Net 1 2 × 256, lip net (32, 64, 128) channels → 256 → 2 × 256, gate 64; 3 s crops.
  "smoke"  tiny nets, 1 s crops; 6,000 Net 1 steps (at 400 it lost 3.4 dB on clean GRID
           speech at 20 dB input, at 6,000 it gains 0.3 dB), 300 lip and 200 gate steps: the
           three stages train end to end in about 6 minutes on a 2-core CPU.
  "grid"   the sizes of "", lips and gate on all of GRID in its official layout
           (``DATA_ROOT/GRID/s1`` ... ``s34`` with ``align/``, read by
           ``jaxspeech.data.corpora``): the 33 talkers with video dealt 70/15/15 by talker,
           so every test talker is unseen (speaker-independent AV enhancement).
  "lrs3"   the same on LRS3-TED (``DATA_ROOT/LRS3/pretrain|trainval|test``): the talks of
           pretrain and trainval dealt 82/18 into train and valid, the official test set's
           talks testing.
  "librispeech", "smoke-librispeech"  "" and "smoke" with Net 1 trained on LibriSpeech.
"""

import dataclasses
import pathlib

from jaxspeech.data.av import AVDataConfig
from jaxspeech.data.mouths import MouthConfig
from jaxspeech.models.av import GateNetConfig, LipNetConfig
from jaxspeech.models.masknet import LSTMMaskNetConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig, recipe_module
from jaxspeech.train.stages import MultiStage, Stage
from jaxspeech.train.tasks.av import AVConfig, AVEvalConfig, AVModelConfig

VARIANTS = ("", "smoke", "grid", "lrs3", "librispeech", "smoke-librispeech")
#: The variants whose Net 1 hears other speakers (LibriSpeech) than the lip net.
OTHER_SPEAKERS = "librispeech"
#: The corpus folder (below the data root, official layout) of each corpus variant.
CORPORA = {"grid": "GRID", "lrs3": "LRS3"}
#: Net 1 is trained on the data of the enhancement recipe (its ``base_config``).
_DISTILL = pathlib.Path(__file__).resolve().parents[1] / "enhancement" / "distill.py"


def _enhancement_base(variant: str):
    return recipe_module(_DISTILL).base_config(variant)


SIZES = {
    "": (
        LSTMMaskNetConfig(hidden=256, layers=2),
        LipNetConfig(channels=(32, 64, 128), embedding=256, hidden=256, layers=2),
        GateNetConfig(hidden=64),
    ),
    "smoke": (
        LSTMMaskNetConfig(hidden=48, layers=1),
        LipNetConfig(channels=(8, 16), embedding=32, hidden=32),
        GateNetConfig(hidden=16),
    ),
}


def _train(variant: str, steps: int) -> TrainConfig:
    if variant == "smoke":
        return TrainConfig(
            steps=steps, batch_size=8, checkpoint_every=100, eval_every=100, log_every=25
        )
    return TrainConfig(
        steps=steps, batch_size=16, checkpoint_every=1000, eval_every=1000, log_every=100
    )


def get_config(variant: str = "") -> MultiStage:
    other_speakers = variant.endswith(OTHER_SPEAKERS)
    if other_speakers:
        variant = variant.removesuffix(OTHER_SPEAKERS).rstrip("-")
    audio_net, lip_net, gate_net = SIZES["" if variant in CORPORA else variant]
    smoke = variant == "smoke"
    data = AVDataConfig(
        corpus=CORPORA.get(variant),
        segment_seconds=1.0 if smoke else 3.0,
        valid_size=16,
        mouth=MouthConfig(crop_size=32 if smoke else 64),
    )
    audio = _enhancement_base("smoke" if smoke else "")
    audio = dataclasses.replace(
        audio,
        model=dataclasses.replace(audio.model, estimator=audio_net),
        data=audio.data if other_speakers else data,
        eval=dataclasses.replace(audio.eval, system="audio"),
        train=_train(variant, 6000 if smoke else 30_000),
    )
    evaluation = AVEvalConfig()
    optim = OptimConfig(name="adam", learning_rate=3e-3 if smoke else 1e-3, clip_norm=5.0)
    schedule = ScheduleConfig(name="constant")

    def av_stage(net: str, steps: int, reads: tuple[str, ...]) -> Stage:
        model = AVModelConfig(net=net, lip_net=lip_net, gate_net=gate_net)
        config = AVConfig(
            model=model,
            data=data,
            eval=evaluation,
            optim=optim,
            schedule=schedule,
            train=_train(variant, steps),
        )
        return Stage(net, config, reads)

    return MultiStage(
        (
            Stage("audio", audio),
            av_stage("lips", 300 if smoke else 20_000, ("audio",)),
            av_stage("gate", 200 if smoke else 10_000, ("audio", "lips")),
        )
    )
