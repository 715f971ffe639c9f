"""rprm-ray: Ray-distributed process reward (R-PRM), process-based self-rewarding (PSRLM) and
PRM-guided search. The core package never imports Ray at module level."""

__version__ = "0.1.0"
