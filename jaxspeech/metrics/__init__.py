"""Evaluation metrics: separation (SI-SNRi, SDR/SDRi, SIR, SAR), quality (PESQ, STOI),
verification."""

from jaxspeech.metrics.quality import pesq, stoi
from jaxspeech.metrics.separation import (
    bss_eval,
    check_not_silent,
    sdr,
    sdr_improvement,
    si_snr_improvement,
)
from jaxspeech.metrics.verification import det_curve, eer, min_dcf

__all__ = [
    "bss_eval",
    "check_not_silent",
    "det_curve",
    "eer",
    "min_dcf",
    "pesq",
    "sdr",
    "sdr_improvement",
    "si_snr_improvement",
    "stoi",
]
