"""The equal-budget prefix experiment: the grid of arms x seeds x settings (`grid`), the MedTok
stage each task trains (`medtok_stage`), the relational task (`relational`), SUMMARY.md and
the plots (`summary`), and disjoint shards run at once (`workers`)."""
