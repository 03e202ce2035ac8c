"""The speed machinery, with one contract: each piece is equal to the eager path it replaces,
proven by tests, and is chosen by structure, never by the user's model changing meaning.

- :mod:`pyrovae.fast.kernels`: faster CPU kernels of the same functions (oneDNN's linear layers,
  a vectorizable Bernoulli log density), used inside compiled functions only
  (``tests/test_cpu_kernels.py``: values and gradients against ``F.linear`` and scipy);
- :mod:`pyrovae.fast.compiled`: the training step (forward, gradient, Adam's fused kernel), the
  loss and the per-epoch report under ``torch.compile``, for the package VAE's structural fast
  path (:mod:`pyrovae.models.vae_fast_path`) (``tests/test_compiled.py``: a compiled run follows the
  eager one);
- :mod:`pyrovae.fast.binarize`: the dynamic binarization's draws from a counter-based generator
  that the compiler vectorizes, the one function eager and compiled steps both call
  (``tests/test_cpu_kernels.py``: its bits against a NumPy decoding, eager and compiled).

Importing it registers nothing: the operators are registered on first use.
"""
