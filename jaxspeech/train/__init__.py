"""The generic trainer: configs, stages, the loop, restoring runs, checkpoints, logging,
optimisers, task registry.

Import ``jaxspeech.train.stages`` or ``jaxspeech.train.loop`` for training and
``jaxspeech.train.restore`` for evaluation and inference; none is imported here so that
``jax.distributed`` can be initialised before anything touches the devices.
"""
