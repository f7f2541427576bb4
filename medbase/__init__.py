"""Base helpers every package builds on: JSON configs, stable hashing, atomic files.

Nothing here imports the rest of the project (it is the bottom layer)."""
