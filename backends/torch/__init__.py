"""The torch backend, in three parts: `codegen` prints a lowered spec as readable PyTorch, `runtime` is
what that code calls (the named kernels, the segment loop, the optimizer base), and `app` trains,
evaluates and samples it (options, the training loop, checkpoints, run folders, data and tasks)."""
