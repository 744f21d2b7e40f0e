"""Code generation: the lowered IR printed as PyTorch (`emit`), the one way a spec's names and text reach
that code (`names`), line width (`pretty`), and importing what was written (`load`). Nothing here runs
a model."""
