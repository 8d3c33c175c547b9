"""Reproducible workflow for "Smaller Large Language Models Can Do Moral Self-Correction"."""

import os

__version__ = "0.1.0"

# Intel MKL, torch's CPU BLAS (see torch.__config__.show()), picks its kernels by the memory alignment of each
# call's arrays and, threaded, may schedule a reduction differently from run to run: the same generation job gave
# option log-probs differing by up to 2e-4 (issue 16). Conditional Numerical Reproducibility fixes both for a given
# CPU and thread count. MKL reads the setting once, at its first call, so it is set here, before the library runs
# any torch code, and by the workflow for every job (rules/common.smk); a value already in the environment wins.
# AUTO costs least of the settings that give identical bytes (docs/RELIABILITY.md, "Determinism").
MKL_CBWR = "AUTO"
os.environ.setdefault("MKL_CBWR", MKL_CBWR)
