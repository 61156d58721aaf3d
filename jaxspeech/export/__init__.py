"""Export of trained models to ONNX graphs written from their params (the ``export`` extra:
``onnx`` and ``onnxruntime``).

``jaxspeech.export.enhancement``: the LSTM enhancement systems, whole-file and streaming;
``jaxspeech.export.separation``: Conv-TasNet. Every graph carries its input and output names
and shapes, sample rate, hop and (streaming) state layout in ``metadata_props``.
"""
