"""Offline medical-code linker built on scispacy: free text -> [(mention span, code, score)].

    from qa.linker import CodeLinker
    linker = CodeLinker.build()          # ICD-10-CM by default; index cached under data/cache/linker/
    linker.link("pt with CHF and COPD")
"""

from qa.linker.config import LinkerConfig
from qa.linker.kb import CodeKnowledgeBase, build_knowledge_base, derive_aliases
from qa.linker.pipeline import CodeLinker, LinkedCode

__all__ = ["CodeLinker", "LinkedCode", "LinkerConfig", "CodeKnowledgeBase", "build_knowledge_base", "derive_aliases"]
