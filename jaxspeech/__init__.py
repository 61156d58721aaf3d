"""jaxspeech: JAX/Flax speech front-end models (enhancement, separation, speaker, matching)."""

__version__ = "0.1.0"
