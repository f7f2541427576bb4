"""EHR benchmark: code tokenizers (flat, hierarchical ICD, text, MedTok and its ablations) inside
EHR models (TransformEHR-style, BEHRT-style, bag-of-codes trees), with patient-level bootstrap
statistics, a resumable grid runner, reports and cross-dataset transfer.

Layers (one way): hierarchy / code_vectors -> tokenizers -> features -> models -> train ->
metrics / bootstrap -> cells -> runner -> report. `scripts/ehr_benchmark.py` only parses args.
"""
