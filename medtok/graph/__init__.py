from medtok.graph.graph import EDGE_TYPES, CodeGraph

__all__ = ["CodeGraph", "EDGE_TYPES"]
