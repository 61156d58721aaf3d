"""Speaker verification: ResNet34 with attentive statistics pooling, AAM-softmax.

Stages (each in ``WORKDIR/<stage>``, each resumable):
  ubm       diagonal GMM-UBM on MFCC + Δ + ΔΔ (sliding CMN, energy VAD) by EM with splitting;
  ivector   total-variability matrix by EM on the frozen UBM, then whitening and PLDA;
  student   the ResNet-ASP student with AAM-softmax + λ · MSE(P · embedding, i-vector), the
            i-vector stage frozen (λ = ``DISTILL_WEIGHT``);
  plain     the same student with AAM-softmax alone (λ = 0), for comparison.

Data: every labelled speaker of the data root's speech corpora (LibriSpeech test-other, the
spoken digits, CMU ARCTIC, speechocean762, and GRID talker s1's 40 clips, whose audio track
PyAV reads from the MPEG video: the ``video`` extra, without which reading the data stops with
the command that installs it). GRID's ``talkers/`` clips are not used: their files are named by
sentence, not by talker (``talkers/bbaf2n.mpg`` is a byte-for-byte copy of ``s1/bbaf2n.mpg``),
so they have no speaker labels. 219 speakers, split speaker-disjoint 80/10/10, stratified by
gender and age (no table gives GRID s1's gender: like the spoken digits', it counts as
unknown); 2 s random crops at 16 kHz, speed 0.9–1.1, real noise at 0–15 dB SNR on 60 % of the
crops and real reverberation on 30 % (the i-vector stages train on clean 4 s crops). Every
crop's speaker is drawn uniformly (``sampling="speaker"``): per utterance, the 4 spoken-digit
training speakers (500 utterances each) would give two thirds of the crops.

``evaluate.py --workdir WORKDIR`` writes the test trial list to ``WORKDIR/<stage>/trials/`` and
tabulates EER and minDCF (p_target 0.01): the students with cosine scoring and AS-norm, and on
the same trials the frozen i-vector teacher with cosine and PLDA scoring (the student stage's
reference rows); the ubm and ivector stages add their own rows (all pairs of each split's
utterances).

Variants:
  ""       UBM of 256 Gaussians, i-vectors of rank 100 (10 EM iterations); ResNet34 (width 32,
           7.3 M parameters), batch 128, SGD with Nesterov momentum, 20 000 steps, margin
           warm-up from step 2 000 to 6 000, utterances up to 10 s in evaluation.
  "smoke"  UBM of 32 Gaussians, rank-32 i-vectors (3 EM iterations); a thin ResNet (one block
           per stage, width 8), batch 16, Adam, 240 steps: each student trains in minutes on a
           2-core CPU; evaluation on 4 utterances per test speaker cut to 4 s.
  "voxceleb"  the standard corpora in their official layouts under ``--config.data.root=DIR``
           (``jaxspeech.data.corpora``; DIR holds ``VoxCeleb2/`` and ``VoxCeleb1/`` or is one
           of them): trains on VoxCeleb2 dev (5,994 speakers: 60 of them validate, 5,934
           train) or, when DIR holds no VoxCeleb2, on VoxCeleb1 dev (1,211 speakers: add
           ``--config.model.num_speakers=1199``; the run says on stderr which it reads), and
           tests on VoxCeleb1-O (``veri_test2.txt``, 37,611 trials of VoxCeleb1's 40 test
           speakers; the table ``eval/test.*``, the list ``trials/VoxCeleb1-veri_test2.txt``).
           MUSAN noise (``DIR/musan``) and simulated room responses
           (``DIR/RIRS_NOISES/simulated_rirs``) as WeSpeaker's recipe. UBM of 2,048 Gaussians,
           rank-400 i-vectors (Kaldi's VoxCeleb recipe); ResNet34 (80 log-Mel bands, 256-dim
           embedding) trained 150 epochs of VoxCeleb2 dev at batch 128 (1.28 M steps), the
           margin rising from epoch 20 to 40, as WeSpeaker's ``conf/resnet.yaml``; whole test
           utterances up to 30 s.
"""

import dataclasses

from jaxspeech.data import UtteranceDataConfig
from jaxspeech.data.corpus import split_sizes
from jaxspeech.models.ivector import UBMConfig
from jaxspeech.models.speaker import RESNET34, SpeakerNetConfig
from jaxspeech.train.config import OptimConfig, ScheduleConfig, TrainConfig
from jaxspeech.train.stages import MultiStage, Stage
from jaxspeech.train.tasks.ivector import IVectorConfig, IVectorEvalConfig, IVectorTaskConfig
from jaxspeech.train.tasks.speaker import SpeakerConfig, SpeakerEvalConfig, SpeakerModelConfig
from jaxspeech.train.tasks.ubm import EMConfig, UBMTaskConfig

VARIANTS = ("", "smoke", "voxceleb")
#: The speech corpora; GRID talker s1's clips are MPEG-1 video with MP2 audio (read by PyAV).
SPEECH = ("librispeech/test-other", "fsdd/recordings", "arctic", "speechocean762", "grid/s1")
#: Labelled speakers of each corpus (the number of training speakers follows from them).
CORPUS_SPEAKERS = {
    "librispeech/test-other": 10,
    "fsdd/recordings": 6,
    "arctic": 2,
    "speechocean762": 200,
    "grid/s1": 1,
}
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
#: λ of the distilled student: the MSE is a mean over the i-vector's dimensions, about 1/rank
#: for length-normalised vectors, so this puts it at a few tenths of the AAM loss.
DISTILL_WEIGHT = 20.0
#: The teacher's (UBM components, EM iterations per split, steps, batches per EM iteration) and
#: (rank, T-matrix EM iterations).
TEACHERS = {
    "": ((256, 4, 40, 16), (100, 10)),
    "smoke": ((32, 2, 12, 8), (32, 3)),
    "voxceleb": ((2048, 4, 56, 64), (400, 10)),
}
#: The voxceleb variant: noise and room responses below the data root, the share of the
#: VoxCeleb2 dev speakers that validates, and its length in epochs of VoxCeleb2 dev
#: (1,092,009 utterances) at batch 128, the margin rising from epoch 20 to 40.
VOXCELEB_NOISE, VOXCELEB_RIR = "musan", "RIRS_NOISES/simulated_rirs"
VOXCELEB_SPLIT = (0.99, 0.01, 0.0)
VOXCELEB_SPEAKERS = 5994
#: Utterances per speaker in the i-vector stages' own tables (all pairs: 240 utterances of
#: VoxCeleb1's 40 test speakers give 28,680 trials) and their validation sets.
VOXCELEB_EVAL_PER_SPEAKER = 6
VOXCELEB_STEPS_PER_EPOCH = 1_092_009 // 128


def student_config(variant: str) -> SpeakerConfig:
    """The student's settings (the plain student: distillation weight 0)."""
    n_speakers = sum(CORPUS_SPEAKERS[corpus] for corpus in SPEECH)
    train_speakers = split_sizes(n_speakers, SPLIT_FRACTIONS, "speaker recipe", "speakers")[0]
    config = SpeakerConfig(
        model=SpeakerModelConfig(
            net=RESNET34, num_speakers=train_speakers, margin_warmup=(2000, 6000)
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
            split_fractions=SPLIT_FRACTIONS,
            sampling="speaker",
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
    if variant == "voxceleb":
        return voxceleb_config(config)
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


def voxceleb_config(config: SpeakerConfig) -> SpeakerConfig:
    """The full recipe's student on the standard corpora (the ``voxceleb`` variant)."""
    epoch = VOXCELEB_STEPS_PER_EPOCH
    train_speakers = split_sizes(VOXCELEB_SPEAKERS, VOXCELEB_SPLIT, "voxceleb", "speakers")[0]
    return dataclasses.replace(
        config,
        model=dataclasses.replace(
            config.model, num_speakers=train_speakers, margin_warmup=(20 * epoch, 40 * epoch)
        ),
        data=dataclasses.replace(
            config.data,
            speech=(),
            corpus=".",
            noise=VOXCELEB_NOISE,
            rir=VOXCELEB_RIR,
            split_fractions=VOXCELEB_SPLIT,
            sampling="utterance",
            eval_per_speaker=VOXCELEB_EVAL_PER_SPEAKER,
        ),
        eval=dataclasses.replace(config.eval, max_seconds=30.0),
        schedule=dataclasses.replace(config.schedule, warmup_steps=6 * epoch),
        train=dataclasses.replace(
            config.train, steps=150 * epoch, checkpoint_every=epoch, eval_every=epoch
        ),
    )


def teacher_configs(variant: str, student: SpeakerConfig):
    """The UBM and i-vector stages' configs: the student's speakers and split, clean 4 s
    crops."""
    (components, per_split, ubm_steps, batches), (rank, em_iterations) = TEACHERS[variant]
    data = dataclasses.replace(
        student.data, crop_seconds=4.0, speed_range=None, noise_snr_db_range=None, reverb_prob=0.0
    )

    def train(steps: int) -> TrainConfig:
        return TrainConfig(
            steps=steps, batch_size=32, checkpoint_every=steps, eval_every=steps, log_every=1
        )

    ubm = UBMTaskConfig(
        model=UBMConfig(components=components, iterations_per_split=per_split),
        data=data,
        em=EMConfig(batches_per_step=batches),
        train=train(ubm_steps),
    )
    ivector = IVectorTaskConfig(
        model=IVectorConfig(rank=rank, em_iterations=em_iterations),
        data=data,
        em=EMConfig(batches_per_step=batches),
        eval=IVectorEvalConfig(seconds=student.eval.max_seconds),
        train=train(em_iterations + 2),
    )
    return ubm, ivector


def get_config(variant: str = "") -> MultiStage:
    plain = student_config(variant)
    ubm, ivector = teacher_configs(variant, plain)
    distilled = dataclasses.replace(
        plain,
        model=dataclasses.replace(plain.model, teacher="ivector", distill_weight=DISTILL_WEIGHT),
        eval=dataclasses.replace(plain.eval, system="ResNet-ASP distilled", references=True),
    )
    return MultiStage(
        (
            Stage("ubm", ubm),
            Stage("ivector", ivector, reads=("ubm",)),
            Stage("student", distilled, reads=("ivector",)),
            Stage("plain", plain),
        )
    )
