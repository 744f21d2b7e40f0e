"""The training application around a generated model: options (`config`), the loop with DDP/FSDP
(`trainer`), `checkpoint`s, `run` folders, corpora (`data`), synthetic tasks (`tasks`), `evals` and
`sample`."""
