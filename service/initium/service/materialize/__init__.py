"""Materialize: Philox, device-independent math, the reference sampler, the CPU and CUDA fast paths
and the structured laws; one planned tensor in, its values on the device out (imports torch)."""
