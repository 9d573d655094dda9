"""`backforth experiment`: the paper's comparison (datasets side by side, fine-tuned, judged, tabulated)
in one resumable command. Orchestration only: it composes pipeline runs, training and evaluation."""

from .config import ExperimentConfig, load_experiment
from .run import run_experiment

__all__ = ["ExperimentConfig", "load_experiment", "run_experiment"]
