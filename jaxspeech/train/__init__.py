"""The generic trainer: configs, the loop, checkpoints, logging, optimisers, task registry.

Import ``jaxspeech.train.loop`` for :func:`~jaxspeech.train.loop.run` and
:func:`~jaxspeech.train.loop.evaluate`; it is not imported here so that ``jax.distributed``
can be initialised before anything touches the devices.
"""
