"""EHR harness: sources -> MEDS events -> task labels -> code tokenizers inside EHR models.

Layering: `ehr` depends on `medtok` (vocabulary, normalisation, tokenizer) and never the
other way round."""
