"""Medical multiple-choice QA: datasets, a code linker and an evaluation harness."""
