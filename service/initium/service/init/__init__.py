"""Init schemes: pure-Python formulas (schemes, gain, distributions) and the torch samplers."""
