"""The stages a recipe is made of. Each stage is a function `(run, ...) -> StageResult`; the
driver (`rprm_ray/loop.py`) decides which run, records them, and skips finished ones on resume."""
