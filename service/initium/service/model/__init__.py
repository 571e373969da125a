"""The torch model of a spec: the runnable module, the signal-propagation probe and LSUV (imports torch)."""
