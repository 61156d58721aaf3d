"""ResNet34-ASP speed: our JAX training step and embedding extraction against the same
architecture in PyTorch, in one process.

Usage (torch installed, e.g. the parity venv of bench/setup_parity.sh):
    PYTHONPATH=$PWD python bench/speaker_speed.py [--batch 64] [--seconds 2] [--repeats 3]
                                  [--threads 2] [--with-ynn-convolutions]

Ours is the speaker task's real training step (``jaxspeech.train.loop.make_train_step`` on
``jaxspeech.train.tasks.speaker.Task``): waveforms -> 80-dim log-mel fbank with per-utterance
mean normalisation -> ResNet34 (BasicBlocks [3, 4, 6, 3], width 32) -> attentive statistics
pooling -> 256-dim embedding -> AAM-softmax over ``--classes`` speakers, backward, SGD with
Nesterov momentum and weight decay, under train.py's XLA options (``jaxspeech.xla_flags``:
no YNNPACK convolutions; to keep them, run with
``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution``). PyTorch's is
the same network written here (WeSpeaker's ``ResNet34`` with ``ASTP`` pooling and
``ArcMarginProduct``; never part of the package) with the same fbank (``torch.stft`` and our
mel filters), loss and optimiser; the parameter counts are asserted equal. Embedding
extraction: eval mode, ``--embed-batch`` utterances of ``--embed-seconds``, utterances per
second. The two alternate (ours, PyTorch, ours, …) so that machine load hits both alike;
medians after one warm-up call each. ``--with-ynn-convolutions`` also times, alternating with
the others, our step compiled as jaxlib compiles it by default (YNNPACK's convolutions), to
measure what ``jaxspeech.xla_flags`` gains.
"""

import argparse
import math
import os

import jax
import numpy as np

from bench.tasnet_speed import interleaved_medians
from jaxspeech import parallel
from jaxspeech.dsp import mel_filterbank
from jaxspeech.models.speaker import RESNET34, SpeakerNetConfig, param_count
from jaxspeech.train import loop, optim
from jaxspeech.train.config import OptimConfig, TrainConfig
from jaxspeech.train.tasks.speaker import SpeakerConfig, SpeakerModelConfig, Task
from jaxspeech.xla_flags import use_training_xla_flags

SAMPLE_RATE = 16000
OPTIM = OptimConfig(name="sgd-nesterov", learning_rate=0.1, momentum=0.9, weight_decay=1e-4)
#: XLA options of a training step compiled as jaxlib 0.10.2 does by default: YNNPACK's fusion
#: types (the option replaces the list) with its convolutions.
WITH_YNN_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,"
    "LIBRARY_FUSION_TYPE_REDUCE,LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
}


class Ours:
    """The speaker task's training step (compiled with ``compiler_options``, XLA debug options
    on top of ``XLA_FLAGS``) and ``embed`` on one device."""

    def __init__(
        self,
        batch: int,
        classes: int,
        compiler_options: dict | None = None,
        net: SpeakerNetConfig = RESNET34,
        name: str = "ours (JAX)",
    ):
        self.name = name
        config = SpeakerConfig(
            model=SpeakerModelConfig(net=net, num_speakers=classes),
            optim=OPTIM,
            train=TrainConfig(batch_size=batch),
        )
        self.task = Task(config)
        self.mesh = parallel.make_mesh(jax.devices()[:1])
        optimizer = optim.make_optimizer(OPTIM, OPTIM.learning_rate)
        self.step_fn = loop.make_train_step(self.task, optimizer, 10, self.mesh)
        # replicated over the mesh as the train step returns it (else the first timed call
        # would compile again for the other sharding)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        init = lambda: loop.init_state(self.task, optimizer, 0)
        self.state = jax.jit(init, out_shardings=replicated)()
        self.embed_fn = jax.jit(self.task.embed)
        self.compiler_options = compiler_options or {}
        self.compiled_step = None

    def params(self) -> int:
        return param_count(self.state.params)

    def train_step(self, wav: np.ndarray, labels: np.ndarray) -> None:
        batch = parallel.shard_batch(self.mesh, {"audio": wav, "speaker": labels})
        if self.compiled_step is None:
            lowered = self.step_fn.lower(self.state, batch)
            self.compiled_step = lowered.compile(self.compiler_options)
        self.state, metrics = self.compiled_step(self.state, batch)
        jax.block_until_ready(metrics["loss"])

    def embed(self, wav: np.ndarray) -> None:
        lengths = np.full(wav.shape[0], wav.shape[1], np.int32)
        state = self.state
        jax.block_until_ready(self.embed_fn(state.params, state.model_state, wav, lengths))


def torch_model(classes: int, threads: int, cfg: SpeakerNetConfig, device: str):
    """WeSpeaker-style ResNet-ASP of ``cfg``, fbank front end and AAM head in PyTorch, on
    ``device``."""
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True  # as WeSpeaker's training script
    n_fft, hop, win = 512, 160, 400
    filters = torch.from_numpy(
        np.array(mel_filterbank(n_fft // 2 + 1, cfg.n_mels, SAMPLE_RATE, 20.0))
    ).to(device)
    window = torch.zeros(n_fft, device=device)
    window[(n_fft - win) // 2 : (n_fft - win) // 2 + win] = torch.hann_window(win, device=device)

    def fbank(wav):
        previous = torch.cat([wav[:, :1], wav[:, :-1]], dim=1)
        spec = torch.stft(
            wav - 0.97 * previous, n_fft, hop, window=window, center=True,
            pad_mode="reflect", return_complex=True,
        )  # fmt: skip
        feats = torch.log(torch.clamp((spec.abs() ** 2).transpose(1, 2) @ filters, min=1e-6))
        return feats - feats.mean(dim=1, keepdim=True)  # [B, T, F]

    class Block(nn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.shortcut = nn.Sequential()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class ResNetASP(nn.Module):
        def __init__(self):
            super().__init__()
            w = cfg.width
            self.conv1 = nn.Conv2d(1, w, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
            layers, c_in = [], w
            for stage, count in enumerate(cfg.blocks):
                c_out = w * 2**stage
                for index in range(count):
                    layers.append(Block(c_in, c_out, 2 if stage and not index else 1))
                    c_in = c_out
            self.layers = nn.Sequential(*layers)
            pooled = c_in * cfg.n_mels // 2 ** (len(cfg.blocks) - 1)
            self.attention = nn.Sequential(
                nn.Conv1d(pooled, cfg.attention_dim, 1),
                nn.Tanh(),
                nn.Conv1d(cfg.attention_dim, pooled, 1),
            )
            self.embedding = nn.Linear(2 * pooled, cfg.embed_dim)
            self.classifier = nn.Parameter(torch.empty(classes, cfg.embed_dim))
            nn.init.xavier_uniform_(self.classifier)

        def forward(self, wav):
            x = fbank(wav).transpose(1, 2).unsqueeze(1)  # [B, 1, F, T] as WeSpeaker
            x = self.layers(torch.relu(self.bn1(self.conv1(x))))
            x = x.reshape(x.shape[0], -1, x.shape[-1])  # [B, C · F', T']
            alpha = torch.softmax(self.attention(x), dim=2)
            mean = torch.sum(alpha * x, dim=2)
            var = torch.sum(alpha * x**2, dim=2) - mean**2
            stats = torch.cat([mean, torch.sqrt(var.clamp(min=1e-7))], dim=1)
            return self.embedding(stats)

    def aam_loss(emb, labels, margin=0.2, scale=32.0):
        cosine = nn.functional.linear(
            nn.functional.normalize(emb), nn.functional.normalize(model.classifier)
        ).clamp(-1 + 1e-7, 1 - 1e-7)
        sine = torch.sqrt(1.0 - cosine**2)
        phi = cosine * math.cos(margin) - sine * math.sin(margin)
        phi = torch.where(
            cosine > math.cos(math.pi - margin), phi, cosine - margin * math.sin(margin)
        )
        one_hot = nn.functional.one_hot(labels, classes).bool()
        return nn.functional.cross_entropy(scale * torch.where(one_hot, phi, cosine), labels)

    model = ResNetASP().to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=OPTIM.learning_rate, momentum=OPTIM.momentum, nesterov=True,
        weight_decay=OPTIM.weight_decay,
    )  # fmt: skip
    return torch, model, optimizer, aam_loss


class Torch:
    """The PyTorch network on ``device`` ("cpu" or "cuda"; CUDA work is synchronised before
    each call returns)."""

    name = "PyTorch"

    def __init__(
        self, classes: int, threads: int, net: SpeakerNetConfig = RESNET34, device: str = "cpu"
    ):
        self.torch, self.model, self.optimizer, self.loss = torch_model(
            classes, threads, net, device
        )
        self.device = device

    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _synchronize(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def train_step(self, wav: np.ndarray, labels: np.ndarray) -> None:
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        wav_t = self.torch.from_numpy(wav).to(self.device)
        labels_t = self.torch.from_numpy(labels).long().to(self.device)
        self.loss(self.model(wav_t), labels_t).backward()
        self.optimizer.step()
        self._synchronize()

    def embed(self, wav: np.ndarray) -> None:
        self.model.eval()
        with self.torch.inference_mode():
            self.model(self.torch.from_numpy(wav).to(self.device))
        self._synchronize()


def measure(runners, wav, labels, utterances, repeats_for) -> tuple[dict, int]:
    """Per call ("train", "embed"), per runner name, the median seconds of the timed calls
    after one warm-up call each (compile, first touch), the runners alternating; and the
    number of timed calls, ``repeats_for(seconds of the warm-up round)``."""
    calls = {
        "train": lambda runner: runner.train_step(wav, labels),
        "embed": lambda runner: runner.embed(utterances),
    }
    timings, repeats = interleaved_medians(runners, calls, 1, repeats_for)
    medians = {call: {name: s for name, (s, _) in by.items()} for call, by in timings.items()}
    return medians, repeats


def inputs(batch: int, seconds: float, classes: int, embed_batch: int, embed_seconds: float):
    """Random (training waveforms [batch, T], labels [batch], utterances to embed
    [embed_batch, T']) at 16 kHz, the same on every run."""
    rng = np.random.default_rng(0)
    noise = lambda n, s: (0.1 * rng.standard_normal((n, round(s * SAMPLE_RATE)))).astype(np.float32)
    wav = noise(batch, seconds)
    labels = rng.integers(0, classes, batch).astype(np.int32)
    return wav, labels, noise(embed_batch, embed_seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--embed-batch", type=int, default=16)
    parser.add_argument("--embed-seconds", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument(
        "--with-ynn-convolutions",
        action="store_true",
        help="also time our step compiled with YNNPACK's convolutions (jaxlib's default)",
    )
    args = parser.parse_args()
    use_training_xla_flags()  # as train.py
    wav, labels, utterances = inputs(
        args.batch, args.seconds, args.classes, args.embed_batch, args.embed_seconds
    )
    runners = [Ours(args.batch, args.classes)]
    if args.with_ynn_convolutions:
        name = "ours, YNNPACK convolutions"
        runners.append(Ours(args.batch, args.classes, WITH_YNN_CONVOLUTIONS, name=name))
    runners.append(Torch(args.classes, args.threads))
    counts = {r.name: r.params() for r in runners}
    assert len(set(counts.values())) == 1, f"parameter counts differ: {counts}"
    print(f"parameters: {counts['PyTorch']:,} each (embedding net + {args.classes}-class AAM head)")
    print(f"JAX {jax.__version__} on {jax.devices()[0].platform}; torch threads {args.threads}")
    print(f"XLA_FLAGS={os.environ['XLA_FLAGS']!r}")
    medians, _ = measure(runners, wav, labels, utterances, lambda _: args.repeats)
    train, embed = medians["train"], medians["embed"]
    print(f"\n| implementation | training step (batch {args.batch} × {args.seconds:g} s) | "
          f"embedding (utt/s, {args.embed_batch} × {args.embed_seconds:g} s) |")  # fmt: skip
    print("|---|---:|---:|")
    for name in counts:
        print(f"| {name} | {train[name]:.2f} s | {args.embed_batch / embed[name]:.1f} |")
    ours = runners[0].name
    ratios = train["PyTorch"] / train[ours], embed["PyTorch"] / embed[ours]
    print(f"\nours / PyTorch speed: training step {ratios[0]:.2f}×, "
          f"embedding {ratios[1]:.2f}× (medians of {args.repeats})")  # fmt: skip
    if args.with_ynn_convolutions:
        ynn = train["ours, YNNPACK convolutions"]
        print(f"ours / ours with YNNPACK convolutions: training step {ynn / train[ours]:.2f}×")


if __name__ == "__main__":
    main()
