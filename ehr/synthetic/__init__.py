"""The synthetic cohort: the fixed world of code pools and effects (`world`), one shard of
patients (`shard`) and the whole cohort written as MEDS (`cohort`)."""
