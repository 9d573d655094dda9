"""Orchestrators: what a command runs, composed of pipeline runs and training steps.

The pipeline never trains a model. Humpback's second round of self-curation (`curate.iterations:
2`) is two pipeline runs with a training step between them: the first stops before the stage whose
model the run trains (`Stage.trained_role`: `curate_m1`), M1 is trained on the seed pairs plus the
pairs round 1 kept, each tagged by source, and the second run continues with M1 as the model of
that stage's role. M1 is trained once per run dir (a finished M1 is reused, an interrupted one
resumes from its checkpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from . import rundir_lock
from .config import ModelConfig, RunConfig, make_model
from .engines import build_engine
from .errors import UserError
from .pipeline import registry
from .pipeline.method import run_method
from .pipeline.stage import DONE, Stage
from .pipeline.store import RunStore

DATA_DIR = Path(__file__).parent / "data"
log = logging.getLogger(__name__)


def run(cfg: RunConfig, out: str | Path, *, force: bool = False, until: str | None = None,
        engine_factory: Callable = build_engine, after: Mapping[str, Stage | Sequence[Stage]] | None = None,
        models: Mapping[str, ModelConfig] | None = None, check: bool = True) -> dict | None:
    """The pipeline on `cfg`, training M1 between the two rounds when the config asks for it; a
    user's own stages go `after` the named ones, with their own model roles in `models`. Returns
    stats.json's content (None when stopped by `until`).

    First the checks that take seconds (`preflight`): the input, the run dir, and, with the real
    engines, the model servers and local model paths; a mistake there fails before any long work.
    Then the run dir's lock: a second run on the same dir is refused (`rundir_lock.RunDirBusy`)."""
    from .preflight import check as preflight

    out = Path(out)
    real = engine_factory is build_engine
    if check:
        preflight(cfg, out, until=until, servers=real, model_paths=real)
    with rundir_lock.hold(out):  # one run per run dir, held to the end (rundir_lock.py)
        return _run(cfg, out, force, until, engine_factory, after, models)


def _run(cfg: RunConfig, out: Path, force: bool, until: str | None, engine_factory: Callable,
         after: Mapping[str, Stage | Sequence[Stage]] | None, models: Mapping[str, ModelConfig] | None) -> dict | None:
    names = registry.names(cfg)
    sampled = next((c for c in registry.enabled(cfg) if c.learns_from_sample), None)
    if sampled is not None:  # the pre-filter's sample first, then its classifier (learned_prefilter.py)
        from .learned_prefilter import labelling_stage, learn_prefilter, start_sampling

        keep = labelling_stage(cfg)
        start_sampling(out, sampled.name)
        if until not in names or names.index(until) > names.index(keep):
            run_method(cfg, out, force=force, until=keep, engine_factory=engine_factory, after=after)
            learn_prefilter(cfg, out, names[: names.index(keep) + 1], sampled.name)
            force = False
    trained = next((c for c in registry.enabled(cfg) if c.trained_role), None)
    extra = dict(models or {})
    if trained is None:
        return run_method(cfg, out, force=force, until=until, engine_factory=engine_factory, after=after, models=extra)
    before = names[names.index(trained.name) - 1]
    if until is not None and until in names and names.index(until) <= names.index(before):
        return run_method(cfg, out, force=force, until=until, engine_factory=engine_factory, after=after, models=extra)
    run_method(cfg, out, force=force, until=before, engine_factory=engine_factory, after=after, models=extra)
    m1 = train_m1(cfg, out, names[: names.index(before) + 1], trained.name)
    return run_method(cfg, out, until=until, engine_factory=engine_factory, models={**extra, trained.role: m1},
                      after=after)


def train_m1(cfg: RunConfig, out: Path, chain: list[str], stage: str) -> ModelConfig:
    """Humpback's M1: the forward model trained on the seed pairs + the pairs round 1 kept."""
    from .train.seed import load_seed
    from .train.sft import load_train_config, train_sft

    folder = out / "m1"
    if not (folder / "train_stats.json").is_file():
        pairs = [{"instruction": r["instruction"], "response": r["text"]}
                 for r in RunStore(out).joined(chain, status=DONE)]
        if not pairs:
            raise UserError("curate.iterations 2: round 1 kept no pair to train M1 on; lower curate.threshold, "
                            "or use iterations 1")
        seed = cfg.curate.seed or str(DATA_DIR / "demo_seed.jsonl")
        sets = [f"base_model={cfg.curate.m1_base_model or _base_of(cfg.models.scorer)}"]
        if cfg.curate.m1_max_steps:
            sets.append(f"max_steps={cfg.curate.m1_max_steps}")
        log.info(f"{stage}: training M1 on {len(pairs)} round-1 pairs + the seed pairs of {seed}")
        train_sft(pairs, load_seed(seed), folder, load_train_config(None, sets))
    return make_model(engine="transformers", model=str(folder))


def _base_of(scorer: ModelConfig) -> str:
    """M1 starts from the scorer's own weights when they are local (the paper's M0 is the base model
    fine-tuned on the seed), else from the embedded default."""
    return scorer.model if scorer.engine == "transformers" else "embedded"
