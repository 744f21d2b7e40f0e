"""The torch backend: generated, readable PyTorch per spec (`emit`), calling a small runtime of
exact fast kernels (`runtime`), compiled with torch.compile."""
