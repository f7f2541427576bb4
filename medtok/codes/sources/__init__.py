"""Offline loaders, one per code system. Each returns a `SourceTable`: code rows in the
vocabulary schema plus cross-system edges keyed by code_id (hierarchy edges come from
`parents` and are added by the builder)."""

from medtok.codes.sources.base import SourceTable

__all__ = ["SourceTable"]
