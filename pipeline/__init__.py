"""relatent's single-machine codec: frame I/O, storage, models, refinement, entropy coding,
the .rlv container, the decoder, metrics and training. Never imports ray."""

__version__ = "0.1.0"
