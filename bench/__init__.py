"""Benchmarks for the codec: rate-distortion against baselines and classic codecs, memory.

Each module has one job (``rd`` drives the RD sweep, ``classic`` runs x264/x265/AV1,
``bdrate`` computes Bjøntegaard deltas, ``memory`` measures peak RSS vs video length) so
that tests can exercise the maths without running a codec.
"""
