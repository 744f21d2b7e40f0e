"""Backends execute a checked, lowered spec: `reference` (the exact per-token oracle) and `torch`
(generated, compiled PyTorch). Both share the math of single operations in `functional`."""
