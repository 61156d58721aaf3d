"""jaxspeech: JAX/Flax speech front-end models (enhancement, separation, speaker, matching)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``jaxspeech.load`` imports the inference side (and jax) on first use only."""
    if name == "load":
        from jaxspeech.inference import load

        return load
    raise AttributeError(f"module 'jaxspeech' has no attribute {name!r}")
