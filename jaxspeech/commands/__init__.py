"""The subcommands of ``jaxspeech`` (see :mod:`jaxspeech.cli`): one module per system, each
with ``register(subparsers)`` declaring its arguments; ``runs``, ``chunks`` and ``outputs``
hold what they share."""
