"""Per-item scores of enhanced and separated speech against the clean references."""

from __future__ import annotations

import numpy as np

from jaxspeech import metrics
from jaxspeech.losses import si_snr


def quality_scores(est, clean, noisy, sample_rate: int) -> dict[str, np.ndarray]:
    """Per-utterance PESQ (wide-band at 16 kHz), STOI, SI-SDR and SI-SDRi of ``est [B, T]``."""
    return {
        "PESQ": metrics.pesq(clean, est, sample_rate),
        "STOI": metrics.stoi(clean, est, sample_rate),
        "SI-SDR": np.asarray(si_snr(est, clean)),
        "SI-SDRi": np.asarray(metrics.si_snr_improvement(est, clean, noisy)),
    }


def separation_scores(est, refs, mix) -> dict[str, np.ndarray]:
    """Per-source SI-SNR, SI-SNRi, SDR, SDRi, SIR and SAR ``[B, n_src]`` (dB) of aligned
    estimates ``est [B, n_src, T]`` of ``refs`` from the mixtures ``mix [B, T]``."""
    decomposition = metrics.bss_eval(est, refs)
    return {
        "SI-SNR": np.asarray(si_snr(est, refs)),
        "SI-SNRi": np.asarray(metrics.si_snr_improvement(est, refs, mix)),
        "SDR": decomposition["SDR"],
        "SDRi": decomposition["SDR"] - metrics.sdr(np.broadcast_to(mix[:, None], refs.shape), refs),
        "SIR": decomposition["SIR"],
        "SAR": decomposition["SAR"],
    }
