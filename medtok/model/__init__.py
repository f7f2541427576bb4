"""MedTok tokenizer model: config, frozen text encoder + cache, GNN, cross-attention, region quantizer, losses."""

from medtok.model.config import GROUPS, MedTokConfig
from medtok.model.medtok import MedTokModel
from medtok.model.quantizer import RegionQuantizer, VQOutput

__all__ = ["GROUPS", "MedTokConfig", "MedTokModel", "RegionQuantizer", "VQOutput"]
