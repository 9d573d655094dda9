"""The Python face of backforth: the method on your rows, from a notebook or a script.

    import backforth

    result = backforth.run("demo", rows=my_dataset, out="runs/nb")
    result.dataset     # datasets.Dataset of the exported pairs (sft.parquet's columns)
    result.rejects     # datasets.Dataset of the rejected rows, each with its `stage` and `reason`
    result.distilled   # the distillation baseline (None when the run has no distill stage)
    result.stats       # stats.json; result.funnel as (label, rows) pairs

`backforth run` and `backforth demo` are clients of `run`. Messages go to `logging.getLogger("backforth")`
(configure logging to see them); progress shows as bars where a person watches (a terminal, a notebook).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import rundir_lock
from .config import ConfigError, ModelConfig, RunConfig, build_config, make_model
from .config import load_config as _load_file
from .errors import UserError
from .pipeline.stage import Stage
from .result import Result

__all__ = ["run", "Result", "load_config", "try_stage", "BUNDLED"]

DATA_DIR = Path(__file__).parent / "data"
BUNDLED = {"demo": DATA_DIR / "demo.yaml"}  # config names `run` and `load_config` know
Overrides = Sequence[str] | Mapping[str, Any] | None


def _override_list(overrides: Overrides) -> list[str]:
    """`--set`-style strings from a list of `"section.field=value"` or a dict `{"section.field": value}`."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return [f"{k}={json.dumps(v)}" for k, v in overrides.items()]  # JSON is YAML: values keep their types
    if isinstance(overrides, str):
        return [overrides]
    return list(overrides)


def load_config(config: str | os.PathLike | Mapping | RunConfig | None = None, overrides: Overrides = None) -> RunConfig:
    """A run config: a bundled name (`"demo"`), a YAML path, a dict, a `RunConfig` or None (the defaults),
    with `overrides` in the `--set` form (`["curate.threshold=4"]` or `{"curate.threshold": 4}`).

    A relative `input.path` in a YAML file is read next to that file when it is there (the bundled
    demo's corpus, a config kept beside its data).
    """
    sets = _override_list(overrides)
    if config is None:
        return build_config({}, sets)
    if isinstance(config, RunConfig):
        return build_config(config.model_dump(mode="json"), sets)
    if isinstance(config, Mapping):
        return build_config(dict(config), sets)
    if isinstance(config, str) and config in BUNDLED and not Path(config).exists():
        config = BUNDLED[config]
    path = Path(config)
    if not path.exists() and not path.suffix:
        raise ConfigError(f"config '{config}': no such file, and not a bundled config ({', '.join(BUNDLED)})")
    cfg = _load_file(path, sets)
    given = cfg.input.path
    if given and not Path(given).is_absolute() and (path.parent / given).exists():
        cfg.input.path = str(path.parent / given)
    return cfg


# ---- rows given in memory ----------------------------------------------------------------------

def _records(rows: Any) -> Iterable[dict]:
    """Dict rows from a `datasets.Dataset`, a pandas DataFrame or any iterable of dicts."""
    if hasattr(rows, "to_dict") and hasattr(rows, "columns") and not hasattr(rows, "features"):
        return rows.to_dict("records")  # a pandas DataFrame
    if isinstance(rows, Mapping):
        if rows and all(hasattr(v, "features") for v in rows.values()):
            raise UserError(f"rows: a DatasetDict ({', '.join(rows)}); pass one split, e.g. rows=ds['train']")
        raise UserError("rows: a single dict; pass a list of dicts (one per document)")
    return rows


def write_rows(rows: Any, folder: Path) -> Path:
    """Rows held in memory, written once as the run's input (`folder/rows-<hash of the content>.jsonl`),
    so that the run reads, resumes and fingerprints them like a file: other rows, another file."""
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = folder / f".rows-{os.getpid()}.tmp"
    n = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, row in enumerate(_records(rows)):
            if not isinstance(row, Mapping):
                tmp.unlink()
                raise UserError(f"rows: item {i} is a {type(row).__name__}, not a dict with the document's `text`")
            line = json.dumps(dict(row), ensure_ascii=False, default=str) + "\n"
            digest.update(line.encode("utf-8"))
            fh.write(line)
            n += 1
    path = folder / f"rows-{digest.hexdigest()[:16]}.jsonl"
    if path.exists():
        tmp.unlink()
    else:
        tmp.replace(path)
    return path


# ---- running -----------------------------------------------------------------------------------

def run(config: str | os.PathLike | Mapping | RunConfig, rows: Any = None, out: str | os.PathLike | None = None, *,
        overrides: Overrides = None, force: bool = False, until: str | None = None,
        after: Mapping[str, Stage | Sequence[Stage]] | None = None, models: Mapping[str, Any] | None = None,
        engine_factory: Callable | None = None) -> Result:
    """Run the method and return its `Result`.

    `config`: a bundled name (`"demo"`), a YAML path, a dict or a `RunConfig`; `overrides` take the
    `--set` keys (`{"curate.threshold": 4}`). `rows`: a `datasets.Dataset`, a list (or any iterable) of
    dicts with `text` (and optionally `id`, `instruction`, passthrough columns), or a path or hub
    dataset name; None reads the config's `input`. `out`: the run dir (None: a new temporary one,
    `Result.path`). Running again into the same `out` resumes; `force` redoes, in place, the stages
    whose settings changed; `until` stops after that stage. `after` places your own stages
    (`backforth.Stage` subclasses) after the named ones, e.g. `after={"curate": MyFilter()}`: they are
    fingerprinted, resumed, counted in the funnel and stats, and run on Ray like the method's.
    `models` gives your stages' own model roles, `{"editor": {"engine": "openai", "model": ..., ...}}`
    (a stage with `role = "editor"`); the method's roles are the config's `models`.
    `engine_factory(model_config) -> engine` replaces how engines are made (tests, your own engines).
    """
    from .engines import build_engine
    from .workflows import run as run_workflow

    cfg = load_config(config, overrides)
    out = Path(tempfile.mkdtemp(prefix="backforth-run-")) if out is None else Path(out)
    extra = {role: m if not isinstance(m, Mapping) else make_model(**m) for role, m in (models or {}).items()}
    with rundir_lock.hold(out) if rows is not None else contextlib.nullcontext():  # before the rows are written
        if rows is not None:
            cfg.input.path = str(rows) if isinstance(rows, (str, os.PathLike)) else str(write_rows(rows, out / "inputs"))
        stats = run_workflow(cfg, out, force=force, until=until, engine_factory=engine_factory or build_engine,
                             after=after, models=extra)
    return Result(out, stats, stopped_after=until if stats is None else None)


# ---- one stage on a few rows -------------------------------------------------------------------

def try_stage(stage: str | Stage, rows: Any, *, model: str | Mapping | ModelConfig | Any = None,
              config: str | os.PathLike | Mapping | RunConfig | None = None, overrides: Overrides = None) -> list[dict]:
    """Run one stage on a few rows, in memory, to try a prompt, a setting or a model: no run dir, no resume.

    `stage`: a stage of the method by name (`"backtranslate"`, `"curate"`, `"rewrite"`, ...), built from
    `config` (default: the defaults) and `overrides`, or your own `Stage` object. `rows`: dicts with
    the columns the stage reads (`text`; `instruction` from curate on). `model`: the model that serves
    the stage: a model name for its role's engine (`"embedded:qwen2.5-coder-1.5b"`), a model section
    (`{"engine": "openai", "model": ..., "base_url": ...}`), or an engine object (kept open); default:
    the config's model for the stage's role. Returns each row with the stage's columns, its `status`
    (`done`, `rejected`, or `unfinished` when the model could not be reached) and, when rejected, `reason`.
    """
    from .engines import build_engine
    from .pipeline import registry
    from .pipeline.chunks import build_chunk, finish_chunk
    from .pipeline.stage import BuildContext

    cfg = load_config(config, overrides)
    if isinstance(stage, str):
        try:
            cls = registry.by_name(stage)
        except KeyError:
            raise UserError(f"stage '{stage}': not a stage of the method ({', '.join(registry.NAMES)}); pass your "
                            "own Stage object instead") from None
        role = cls.role_for(cfg)
    else:
        cls, role = None, stage.role
    engine, own = _engine_for(model, role, cfg, build_engine)
    try:
        if cls is not None:
            from .engines.tokenized import token_counter

            counter = (lambda _role: engine) if engine is not None else (lambda r: token_counter(getattr(cfg.models, r)))
            stage = cls.build(cfg, BuildContext(counter))
        items = [dict(r) for r in _records(_list(rows))]
        for i, r in enumerate(items):
            r.setdefault("_index", i)
            r.setdefault("id", str(i))
        if engine is not None:
            stage.model_name = engine.name
        stage.setup(engine)
        if stage.survey_first:
            stage.survey(items)
        pending = build_chunk(stage, items)
        if pending.requests and engine is None:
            _no_model(role)
        results = engine.generate(pending.requests) if pending.requests else []
        finished = finish_chunk(stage, pending, results)
    finally:
        if own and engine is not None:
            engine.close()
    by_id = {r["id"]: r for r in finished.rows}
    errors = {f["id"]: f["error"] for f in finished.failed}
    out = []
    for r in pending.rows:
        done = by_id.get(r["id"])
        if done is None:
            done = dict(r, status="unfinished", error=errors.get(r["id"], "the model could not be reached"))
        else:
            done = dict(done)
            done["status"] = done.pop("_status")
        done.pop("_index", None)
        out.append(done)
    return out


def _list(rows: Any) -> Any:
    if isinstance(rows, (str, os.PathLike)):
        from .io import iter_records

        return [r for _w, r, problem in iter_records(Path(rows)) if problem is None and r is not None]
    return rows


def _no_model(role: str | None):
    raise UserError(f"this stage asks a model (role {role}); give one with model=...")


def _engine_for(model: Any, role: str | None, cfg: RunConfig, build: Callable) -> tuple[Any, bool]:
    """(the engine for `role`, whether it is ours to close)."""
    if model is not None and hasattr(model, "generate"):
        return model, False
    if role is None and model is None:
        return None, False
    if isinstance(model, Mapping):
        section = make_model(**model)
    elif isinstance(model, str):
        base = getattr(cfg.models, role, None) if role else None
        section = (base.model_copy(update={"model": model}) if base is not None
                   else make_model(engine="transformers", model=model))
    elif model is not None:
        section = model
    else:
        section = getattr(cfg.models, role, None)
        if section is None:
            raise UserError(f"no model for role '{role}' in the config; give one with model=...")
    return build(section), True
