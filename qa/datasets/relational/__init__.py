"""Relational questions over the code graph and the knowledge graph: the question builder
(`questions`), the knowledge-graph facts (`kg`), leak checks (`checks`) and per-type tables
(`tables`)."""
