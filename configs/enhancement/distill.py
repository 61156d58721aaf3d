"""Mask-based enhancement with teacher→student distillation: teacher, students, baselines.

Stages (each in ``WORKDIR/<stage>``):
  teacher   large non-causal estimator trained on (features, IRM) with mask MSE;
  student   small causal estimator trained with mask_distillation(m_s, m_t, m_r), the
            teacher restored frozen from ``WORKDIR/teacher``;
  baseline  the same student trained on the IRM alone (mask MSE), for comparison.

``evaluate.py --workdir WORKDIR`` tabulates teacher, distilled student, plain student, the
noisy input and the oracle IRM (PESQ wb, STOI, SI-SDR(i) per SNR; params, MMAC/s, CPU RTF).

Variants:
  ""       BLSTM teacher (2 × 384 per direction) → causal LSTM student (2 × 128); noisy
           speech of 210 speakers (``SPEECH``) at 16 kHz, 4 s crops, SNR −5…30 dB over real
           noises (5 for training; 1 validation and 2 test noises never trained on), each
           training noise tilted by −3…12 dB per octave; half the training mixtures have
           Gaussian noise of a random spectral envelope instead of a recording
           (``colored_noise_prob``); 20 % reverberant; 32 ms Hann window,
           16 ms hop; mask loss weighted by the noisy bin energy.
  "tcn"    Conv-TasNet-style TCN teacher (B=256, H=512, X=8, R=3, gLN) → causal TCN student
           (B=64, H=128, X=6, R=2, cLN).
  "smoke"  tiny LSTM models (BLSTM 2 × 64 → LSTM 1 × 32), 1 s crops, 1,500 steps per stage,
           best checkpoint by SI-SDR on 32 validation mixtures: minutes on a 2-core CPU.
  "cpu"    BLSTM 2 × 128 → LSTM 2 × 64, 2 s crops, batch 16, warm-up + cosine, 1,500 steps
           per stage; each student is trained with seeds 0, 1 and 2 (``STUDENT_SEEDS``), so
           ``evaluate.py`` reports the distilled-vs-plain difference over three seeds each,
           paired by test utterance. All seven stages trained in 47 minutes on the 2-core
           CPU while two or three other training jobs shared it.
  "voicebank"  the "" models on VoiceBank-DEMAND (``--config.data.root=DIR`` holding
           ``VoiceBank-DEMAND/`` with ``{clean,noisy}_{trainset_28spk,testset}_wav/``): 2 s
           aligned crops of the trainset pairs at 16 kHz (shorter files left out), speakers
           p226 and p287 held out for validation, tested on the 824 testset pairs whole.
  "dns"    the "" models on the DNS Challenge (``--config.data.root=DIR`` holding
           ``DNS-Challenge/`` with ``clean/``, ``noise/`` and ``test_set/synthetic/``, or its
           ``datasets/`` folder): 4 s crops of clean speech mixed on the fly with the noise
           recordings at 0–40 dB SNR, 5 % of the readers and noise files held out for
           validation, tested on the synthetic test set's pairs whole.

Every variant declares that comparison (``eval/test-paired.md``).
"""

import dataclasses

from jaxspeech.data import MixtureConfig, MixtureDataConfig
from jaxspeech.data.noisy_pairs import NoisyPairDataConfig
from jaxspeech.models.masknet import LSTMMaskNetConfig, TCNMaskNetConfig
from jaxspeech.models.tcn import TCNConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.stages import Comparison, MultiStage, Stage
from jaxspeech.train.tasks.enhancement import (
    EnhancementConfig,
    EnhancementEvalConfig,
    EnhancementModelConfig,
)

VARIANTS = ("", "tcn", "smoke", "cpu", "voicebank", "dns")
#: The pair corpora of the ``voicebank`` and ``dns`` variants: their folder below the data root
#: and the training crop length.
CORPORA = {"voicebank": ("VoiceBank-DEMAND", 2.0), "dns": ("DNS-Challenge", 4.0)}
#: The 16 kHz speakers: LibriSpeech (10, genders known) and speechocean762 (200 children and
#: adults, gender and age known). The spoken digits (8 kHz, nothing above 4 kHz) would teach a
#: 16 kHz mask net that clean speech has no upper band; ARCTIC's 2 speakers (6 sentences) add
#: little and are left out.
SPEECH = ("librispeech", "speechocean762")

ESTIMATORS = {
    "": (
        LSTMMaskNetConfig(hidden=384, layers=2, bidirectional=True),
        LSTMMaskNetConfig(hidden=128, layers=2),
    ),
    "tcn": (
        TCNMaskNetConfig(TCNConfig(
            bottleneck_channels=256, hidden_channels=512, skip_channels=256,
            blocks=8, repeats=3, norm="gLN",
        )),
        TCNMaskNetConfig(TCNConfig(
            bottleneck_channels=64, hidden_channels=128, skip_channels=64,
            blocks=6, repeats=2, norm="cLN", causal=True,
        )),
    ),
    "smoke": (
        LSTMMaskNetConfig(hidden=64, layers=2, bidirectional=True),
        LSTMMaskNetConfig(hidden=32, layers=1),
    ),
    "cpu": (
        LSTMMaskNetConfig(hidden=128, layers=2, bidirectional=True),
        LSTMMaskNetConfig(hidden=64, layers=2),
    ),
}  # fmt: skip
ESTIMATORS.update(dict.fromkeys(CORPORA, ESTIMATORS[""]))


def base_config(variant: str) -> EnhancementConfig:
    """The settings every stage shares (the estimator is set per stage)."""
    config = EnhancementConfig(
        model=EnhancementModelConfig(),
        data=MixtureDataConfig(
            speech=SPEECH,
            noise="noise",
            rir="rir",
            mixture=MixtureConfig(
                sample_rate=16000,
                segment_seconds=4.0,
                noise_snr_db_range=(-5.0, 30.0),
                noise_tilt_db_range=(-3.0, 12.0),
                colored_noise_prob=0.5,
                reverb_prob=0.2,
            ),
            split_fractions=(0.6, 0.2, 0.2),
            noise_split_fractions=(0.625, 0.125, 0.25),
            valid_size=32,
        ),
        eval=EnhancementEvalConfig(),
        optim=OptimConfig(name="adam", learning_rate=1e-3, clip_norm=5.0),
        schedule=ScheduleConfig(name="warmup_cosine", warmup_steps=500, final_factor=0.05),
        train=TrainConfig(
            steps=50_000, batch_size=16, checkpoint_every=2000, eval_every=2000, log_every=100
        ),
    )
    if variant == "smoke":
        optim = OptimConfig(name="adam", learning_rate=3e-3, clip_norm=5.0)
        return _short(config, 1.0, optim, ScheduleConfig(name="constant"), batch_size=8)
    if variant == "cpu":
        schedule = ScheduleConfig(name="warmup_cosine", warmup_steps=200, final_factor=0.05)
        return _short(config, 2.0, config.optim, schedule, batch_size=16)
    if variant in CORPORA:
        corpus, seconds = CORPORA[variant]
        data = NoisyPairDataConfig(corpus=corpus, sample_rate=16000, segment_seconds=seconds)
        return dataclasses.replace(config, data=data)
    return config


def _short(
    config: EnhancementConfig,
    seconds: float,
    optim: OptimConfig,
    schedule: ScheduleConfig,
    batch_size: int,
) -> EnhancementConfig:
    """``config`` trained for 1,500 steps of ``batch_size`` crops ``seconds`` long (validated
    and checkpointed every 250) and tested on 96 utterances of 3 s."""
    return dataclasses.replace(
        config,
        data=dataclasses.replace(
            config.data,
            mixture=dataclasses.replace(config.data.mixture, segment_seconds=seconds),
        ),
        eval=dataclasses.replace(config.eval, size=96, segment_seconds=3.0, rtf_repeats=2),
        optim=optim,
        schedule=schedule,
        train=TrainConfig(
            steps=1500, batch_size=batch_size, checkpoint_every=250, eval_every=250, log_every=50
        ),
    )


#: Training seeds of the students per variant: the ``cpu`` variant trains each student three
#: times (stages ``student``/``baseline`` for seed 0, ``student_seed1``, ``baseline_seed1``, ...)
#: so that ``evaluate.py`` can compare them paired on the same test utterances.
STUDENT_SEEDS = {"cpu": (0, 1, 2)}


def get_config(variant: str = "") -> MultiStage:
    config = base_config(variant)
    teacher_net, student_net = ESTIMATORS[variant]

    def stage(name: str, estimator, references: bool, teacher=None, seed=0) -> Stage:
        model = dataclasses.replace(config.model, estimator=estimator, teacher=teacher)
        evaluation = dataclasses.replace(config.eval, system=name, references=references)
        train = dataclasses.replace(config.train, seed=seed)
        stage_config = dataclasses.replace(config, model=model, eval=evaluation, train=train)
        return Stage(name, stage_config, () if teacher is None else (teacher,))

    stages, students, baselines = [stage("teacher", teacher_net, references=True)], [], []
    for seed in STUDENT_SEEDS.get(variant, (0,)):
        suffix = f"_seed{seed}" if seed else ""
        students.append(stage("student" + suffix, student_net, False, "teacher", seed))
        baselines.append(stage("baseline" + suffix, student_net, False, seed=seed))
        stages += [students[-1], baselines[-1]]
    comparison = Comparison(
        "distilled − plain student",
        tuple(s.name for s in students),
        tuple(s.name for s in baselines),
    )
    return MultiStage(tuple(stages), (comparison,))
