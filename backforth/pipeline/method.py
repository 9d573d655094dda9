"""The method: a run config's stages from the registry, over its input, into a run dir, then the export.

`run_method(cfg, out)` is what `backforth run` and `backforth.run()` do once the checks have passed
(`workflows.run` adds them, and Humpback's M1 between two rounds): build the registry's stages that
the config enables (a user's own stages inserted `after` the named ones), read the input
(`corpus.run_documents`: long pages cut into sections when `prepare.split` asks), run them with the
generic `Runner`, and write the outputs (`export`: sft, distilled, rejects, stats, the card).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from ..config import ConfigError, ModelConfig, RunConfig
from ..corpus import run_documents
from ..engines import build_engine
from ..engines.tokenized import token_counter
from ..errors import UserError
from . import fingerprints, registry
from .export import export_run
from .job import Engines
from .runner import Runner
from .stage import BuildContext, Stage

__all__ = ["run_method", "build_stages", "insert_stages", "executor_for", "engines_for", "input_identity",
           "stage_fingerprints"]

Additions = Mapping[str, "Stage | Sequence[Stage]"]


def engines_for(cfg: RunConfig, engine_factory: Callable = build_engine,
                models: Mapping[str, ModelConfig] | None = None) -> Engines:
    """The run's model roles (`cfg.models`, plus models made outside the config: Humpback's M1)."""
    return Engines({**dict(cfg.models), **dict(models or {})}, engine_factory)


def build_stages(cfg: RunConfig, engine_factory: Callable = build_engine, engines: Engines | None = None,
                 run_dir: Path | None = None) -> list[Stage]:
    """The registry's stages of a run with `cfg`, in order. Stages are built cheaply, for their
    fingerprints: a stage that measures documents gets a role's tokenizer, never its weights (a
    caller's own engines count for themselves)."""
    engines = engines or engines_for(cfg, engine_factory)
    if engines.factory is build_engine:
        ctx = BuildContext(lambda role: token_counter(engines.model(role)), run_dir=run_dir)
    else:
        ctx = BuildContext(engines.get, run_dir=run_dir)
    return [cls.build(cfg, ctx) for cls in registry.enabled(cfg)]


def insert_stages(stages: list[Stage], after: Additions | None) -> list[Stage]:
    """`stages` with a user's own stages placed after the named ones (`{"curate": MyStage()}`)."""
    if not after:
        return stages
    names = [st.name for st in stages]
    unknown = [n for n in after if n not in names]
    if unknown:
        raise UserError(f"after={{{unknown[0]!r}: ...}}: not a stage of this run ({', '.join(names)}); name the "
                        "stage your own stage comes after")
    # A stage that takes up its predecessor's rejects again (`continues`: a rewrite's second draw, Humpback's
    # second round) must get them straight from it: a stage added after the predecessor comes after both.
    groups: list[list[Stage]] = []
    for st in stages:
        if groups and st.continues is not None and st.continues == groups[-1][0].name:
            groups[-1].append(st)
        else:
            groups.append([st])
    out: list[Stage] = []
    for group in groups:
        out.extend(group)
        for st in group:
            extra = after.get(st.name)
            for added in ([extra] if isinstance(extra, Stage) else list(extra or [])):
                if not isinstance(added, Stage):
                    raise UserError(f"after={{{st.name!r}: {added!r}}}: not a Stage; subclass backforth.Stage")
                if not added.name:
                    raise UserError(f"{type(added).__name__}: a stage needs a `name` (its results go under stages/<name>/)")
                out.append(added)
    return out


def input_identity(cfg: RunConfig) -> dict:
    """What the input is, for the first stage's fingerprint (a smaller `limit` reads the same rows)."""
    return cfg.input.model_dump(exclude={"limit"})


def executor_for(cfg: RunConfig, engine_factory: Callable | None = None):
    """The executor `runner.executor` names: `local` (this process) or `ray` (docs/ray.md)."""
    if cfg.runner.executor == "ray":
        if cfg.curate.iterations == 2 and "filter" in cfg.variant:
            raise ConfigError("curate.iterations 2 (Humpback's M1, trained in-process on round 1's pairs) is not "
                              "available with runner.executor ray; use runner.executor local for it, or iterations 1")
        from .executors.ray import RayExecutor

        return RayExecutor(cfg.runner.ray, engine_factory)
    from .executors.local import LocalExecutor

    return LocalExecutor()


def run_method(cfg: RunConfig, out: str | Path, *, force: bool = False, until: str | None = None,
               engine_factory: Callable = build_engine, models: Mapping[str, ModelConfig] | None = None,
               executor=None, after: Additions | None = None) -> dict | None:
    """Run the config's stages (or those up to `until`) over its input into `out`, then export;
    returns stats.json's content, or None when stopped by `until`."""
    out = Path(out)
    names = registry.names(cfg) + [st.name for v in (after or {}).values()
                                   for st in ([v] if isinstance(v, Stage) else list(v or []))]
    if until is not None and until not in names:
        raise UserError(f"--until {until}: not a stage of this run ({', '.join(names)})")
    engines = engines_for(cfg, engine_factory, models)
    stages = insert_stages(build_stages(cfg, engines=engines, run_dir=out), after)
    upto = stages if until is None else stages[: [st.name for st in stages].index(until) + 1]
    for st in upto:
        if st.role and not engines.known(st.role):
            if st.trained_role:
                raise UserError(f"no model for role '{st.role}': stage {st.name} scores with a model that `backforth "
                                "run` trains from the run's own earlier results (Humpback's M1, curate.iterations: 2); "
                                "run the pipeline through it")
            raise UserError(f"stage {st.name}: no model for role '{st.role}'; give it one of the run's roles "
                            f"({', '.join(engines.models)})")
    ex = executor or executor_for(cfg, engine_factory)
    runner = Runner(stages, lambda: run_documents(cfg), out, engines=engines, settings=cfg.runner, executor=ex,
                    until=until, force=force, identity=input_identity(cfg),
                    record={"config.yaml": yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)})
    try:
        finished = runner.run()
    finally:
        if executor is None:
            ex.close()
    if not finished:
        return None
    return export_run(cfg, out, stages, runner.fingerprints, engines.model)


def stage_fingerprints(cfg: RunConfig, stages: list[Stage],
                       model_of: Callable[[str], ModelConfig] | None = None) -> dict[str, dict]:
    """The fingerprints of a run with `cfg` (`fingerprints.stage_fingerprints` from the config's input
    and models)."""
    return fingerprints.stage_fingerprints(stages, model_of or engines_for(cfg).model, input_identity(cfg))
