"""Sources -> MEDS. `convert_source(SourceConfig(...))` (in `ehr.sources.to_meds`) converts any
supported dataset; each source's table layouts and rules live in its own module (`mimic`,
`eicu`, `meds_dir`), the shared stages in `base`, `tables`, `codes` and `assemble`."""

from ehr.sources.codes import CodeResolver
from ehr.sources.tables import MissingTableError
from ehr.sources.to_meds import RULES, SOURCE_DATASETS, ConvertResult, SourceConfig, convert_source

__all__ = ["SourceConfig", "ConvertResult", "convert_source", "CodeResolver", "MissingTableError", "RULES", "SOURCE_DATASETS"]
