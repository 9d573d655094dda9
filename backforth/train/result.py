"""What a training run did (`TrainResult`): returned by the trainer, written to the model card."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TrainResult:
    """What a training run did, as written to the model card."""

    out_dir: Path
    direction: str
    base_model: str
    base_path: str
    counts: dict[str, int]
    dropped_too_long: int
    steps: int
    final_loss: float | None
    mean_loss: float | None
    seconds_per_step: float | None
    resumed_from: str | None = None
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}
