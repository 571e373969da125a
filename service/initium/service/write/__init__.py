"""Write: the streaming safetensors writer, the shard index and the artifact store, the only code
that touches bytes at rest."""
