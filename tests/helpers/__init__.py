"""Helpers of the test suite, one place each (conftest.py keeps only fixtures and hooks).

* ``devices``: CUDA presence, the emulated-CUDA build, device parameters.
* ``tolerance``: the tolerance policy and ``assert_matches``, the one comparison
  every numerical test goes through; ``assert_identical`` for bit-for-bit checks.
* ``inputs``: random embeddings, lengths, labels and upstream gradients.
* ``losses``: the registered losses (spoofloss.registry.LOSSES) as test cases:
  building a fused module with its float64 twin, their inputs, one call of each.
* ``steps``: one loss step (loss, score and their gradients) of a fused module
  and its float64 reference with the atol scale of every output, the scales
  derived from spoofloss.reference by autograd.
* ``op_args``: valid argument sets of every op (to spoil one at a time) and the
  error matcher.
* ``kernel_coverage``: which CUDA kernels an emulated run launched.
"""
