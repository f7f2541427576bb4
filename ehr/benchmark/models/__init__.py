"""EHR models: sequence encoders over visits (TransformEHR-style, BEHRT-style) and the
bag-of-codes baselines (scikit-learn)."""
