"""The bottom layer: plumbing every package builds on (atomic files, JSON configs, stable
hashing, deterministic kernels, paths, CSV reading, run provenance).

Nothing here imports the rest of the project, so `medtok`, `qa`, `ehr`, `llm_adapter` and
`serve` can all use it without depending on each other."""
