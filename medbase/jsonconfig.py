"""One JSON round trip for every config dataclass in the project.

Two rules for keys the dataclass does not know:
- a config a *user* writes (`from_dict`, `from_json_file`, CLI overrides) rejects them, so a
  typo never silently falls back to a default;
- a config *saved beside a checkpoint* (`load_saved`) may come from a newer version of the
  package: unknown keys are ignored with one warning that names them (peft's
  `adapter_config.json` behaves the same way).

Subclasses validate in `__post_init__` as before; `_normalize_dict` may convert JSON types
(lists back to tuples, ...) before construction.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

from medbase.atomic import atomic_write_text

T = TypeVar("T", bound="JsonConfig")


class UnknownConfigKeys(ValueError):
    """A user-written config names keys the dataclass does not have."""


class JsonConfig:
    """Mixin for `@dataclass` configs: `to_dict` / `from_dict` / `save` / `load` / `load_saved`."""

    CONFIG_NAME: str = "config.json"

    # ---- dict round trip --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # tuples become lists in JSON anyway; make the dict equal to its JSON round trip
        return json.loads(json.dumps(d, default=str))

    @classmethod
    def _known_keys(cls) -> set[str]:
        return {f.name for f in fields(cls) if f.init}

    @classmethod
    def _normalize_dict(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Hook: convert JSON values to the field types (default: unchanged)."""
        return d

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any], *, unknown: str = "error") -> T:
        """Build from a dict. `unknown`: "error" (user configs) or "warn" (saved checkpoints)."""
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
        extra = sorted(set(d) - cls._known_keys())
        if extra:
            if unknown == "error":
                raise UnknownConfigKeys(
                    f"unknown {cls.__name__} keys {extra}; known: {sorted(cls._known_keys())}")
            warnings.warn(f"{cls.__name__}: ignoring keys {extra} (saved by a newer version?)",
                          stacklevel=3)
            d = {k: v for k, v in d.items() if k not in extra}
        return cls(**cls._normalize_dict(dict(d)))

    # ---- files -------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write as JSON atomically (a crash never leaves a half-written config)."""
        atomic_write_text(path, self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """A config file a user wrote: unknown keys are an error."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), unknown="error")

    @classmethod
    def load_saved(cls: type[T], path: str | Path) -> T:
        """A config saved beside a checkpoint: unknown keys are ignored with a warning."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")), unknown="warn")

    # ---- checkpoint directories (peft-style) --------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.save(Path(directory) / self.CONFIG_NAME)

    @classmethod
    def from_pretrained(cls: type[T], directory: str | Path) -> T:
        return cls.load_saved(Path(directory) / cls.CONFIG_NAME)
