"""Scores computed on one layer's embeddings: clustering against fine labels, few-shot probes."""
