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
  (``tests/test_cpu_kernels.py``: its bits against a NumPy decoding, eager and compiled);
- :mod:`pyrovae.fast.machine_choices`: where the faster of two kernels depends on the processor
  (oneDNN or MKL for the linear layers; bf16 or float32), the choice measured once on the machine
  and kept in the user's cache (``tests/test_machine_choices.py``);
- :mod:`pyrovae.fast.compile_cache`: the compiled steps' kernels kept in the user's cache, each
  compile recorded for ``compile="auto"``;
- :mod:`pyrovae.fast.denormals`: the training steps in flush-to-zero, as XLA computes on CPU
  (``tests/test_denormals.py``: the same parameters to the bit);
- :mod:`pyrovae.fast.precision`: bf16 training where the processor has it, and a warning with the
  measured figures where it is the slower.

Importing it registers nothing: the operators are registered on first use.
"""
