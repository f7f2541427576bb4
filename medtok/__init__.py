"""MedTok: multimodal medical-code tokenizer (Su et al. 2025), offline and CPU-first."""

__version__ = "0.1.0"
