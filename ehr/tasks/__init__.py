"""EHR prediction tasks over MEDS events (one task per file; `registry.get_task(name, preset)`)."""
