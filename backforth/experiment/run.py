"""`backforth experiment EXP.yaml`: the paper's comparison for the user's own corpus and models.

Steps, each in its own folder of the experiment dir and skipped when done and unchanged
(`steps.run_steps`):

1. `pipeline`: one pipeline run (`pipeline/`) serving every pipeline dataset (see `datasets`): the
   stage that applies the keep rule records its decision on every scored pair (`keep`) without
   rejecting (`curate.filter: false`), so that `rewrite` (no filter) and `filter+rewrite` share their
   rewrites, and every instruction is rewritten and distilled once;
2. `datasets`: each compared dataset at the common size (`datasets/<name>.jsonl`);
   then, before any fine-tune and also with `train: none` (`response_table`):
   `judge check`: the judge on labelled pairs of this task (`judge_check/judge_check.json`), and
   `response table`: the datasets' responses to their shared instructions and their instructions
   (rubric: clear, self-contained, answerable, useful; `prompts/instruction_judge.jinja`), judged head
   to head (`response_table/`, `response_table.md` / `.csv`);
3. per dataset, `train/<name>`: the same base model fine-tuned on the seed pairs + that dataset,
   with the same seed and steps (trl/peft; `train: none` stops after the data and the analyses);
4. `answers/reference.jsonl` when the reference is a model, and per dataset `answers/<name>.jsonl`:
   the eval set answered (T=0.7, top_p=0.9 by default);
5. per dataset `judgements/<name>.jsonl`: each answer judged against the reference, both orders;
6. `analysis`: the datasets' texts compared (MAUVE and classifier accuracy of rewritten vs
   distilled vs documents, unique trigrams, lengths) and the pipeline run's report;
7. `table`: `table.md` / `table.csv` in the shape of the paper's Table 1, and `report.html`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from .. import rundir_lock
from ..config import ModelConfig, make_model
from ..engines import build_engine
from ..evaluate.generate import run_dir_for
from ..errors import UserError
from ..pipeline import registry
from . import datasets as ds
from .config import ExperimentConfig, dump
from .steps import Step, run_steps, time_table

log = logging.getLogger(__name__)


def pipeline_config(cfg: ExperimentConfig):
    """The one run behind every pipeline dataset: scored, with the keep rule's decision recorded on
    each pair (`keep`) and, when `rewrite` is compared, nothing rejected by it; rewritten when any
    dataset needs a rewrite, distilled when `distill` is compared."""
    wanted = set(cfg.pipeline_datasets())
    run = cfg.run.model_copy(deep=True)
    rewrite = bool(wanted & {"rewrite", "filter+rewrite", "distill"})
    run.variant = "filter+rewrite" if rewrite else "filter"
    if "rewrite" in wanted:  # rewrite without a filter: every scored pair goes on to the rewriter
        run.curate = run.curate.model_copy(update={"filter": False})
    run.distill = run.distill.model_copy(update={"enabled": "distill" in wanted})
    return run


def _train_settings(cfg: ExperimentConfig) -> dict:
    settings = dict(cfg.train) if isinstance(cfg.train, dict) else {}
    settings.setdefault("seed", cfg.seed)
    return settings


def _seed_rows(cfg: ExperimentConfig) -> list[dict]:
    from ..train.seed import load_seed

    path = Path(__file__).parent.parent / "data" / "demo_seed.jsonl" if cfg.seed_data == "bundled" else Path(cfg.seed_data)
    return load_seed(path)


def _eval_rows(cfg: ExperimentConfig) -> list[dict]:
    from ..evalsets import load_eval_set

    return load_eval_set(cfg.eval.eval_set, limit=cfg.eval.limit)


def _identity_of_file(path: str) -> dict:
    p = Path(path).expanduser()
    return {"path": path, "size": p.stat().st_size, "mtime": int(p.stat().st_mtime)} if p.is_file() else {"name": path}


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, engine_factory: Callable = build_engine) -> dict:
    """Run (or resume) the experiment into `out`; returns the table and where each output is. One
    experiment at a time per dir (`rundir_lock`; the pipeline run inside holds its own dir's lock)."""
    out = Path(out)
    with rundir_lock.hold(out):
        return _experiment(cfg, out, engine_factory)


def _experiment(cfg: ExperimentConfig, out: Path, engine_factory: Callable) -> dict:
    from ..workflows import run as run_pipeline

    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.yaml").write_text(dump(cfg))
    run_cfg = pipeline_config(cfg)
    run_dir = out / "pipeline"
    names = cfg.names()
    train = cfg.train != "none"
    tsettings = _train_settings(cfg)
    base_model = tsettings.get("base_model", "embedded")
    judge = cfg.judge_section()
    steps: list[Step] = []
    state: dict = {}

    def do_pipeline() -> dict:
        # force: this step's own fingerprint says when it changed; the run then redoes the stages whose
        # settings changed, in place, instead of stopping on them
        stats = run_pipeline(run_cfg, run_dir, engine_factory=engine_factory, force=True)
        state["chain"] = list(stats["stages"])
        return {"funnel": stats["funnel"], "requests": {s: v["in"] for s, v in stats["stages"].items()
                                                        if registry.by_name(s).role}}

    steps.append(Step("pipeline", {"run": run_cfg.model_dump(mode="json")}, do_pipeline, [run_dir / "stats.json"]))

    def do_datasets() -> dict:
        chain = state.get("chain") or registry.names(run_cfg)
        made = ds.pipeline_datasets(run_dir, chain, cfg)
        for ext in cfg.externals():
            made[ext.name] = ds.external_dataset(ext)
        cut, n = ds.equal_size({k: made[k] for k in names}, ds.SHARED, cfg.size, cfg.seed)
        for name, rows in cut.items():
            ds.write(rows, out / "datasets" / f"{_slug(name)}.jsonl")
        log.info(f"experiment: {len(cut)} datasets of {n} pairs each (available: "
            + ", ".join(f"{k} {len(v)}" for k, v in made.items()) + ")")
        return {"size": n, "available": {k: len(v) for k, v in made.items()}}

    dataset_files = [out / "datasets" / f"{_slug(n)}.jsonl" for n in names]
    steps.append(Step("datasets", {"datasets": [d if isinstance(d, str) else {**d.model_dump(), "file": _identity_of_file(d.path)}
                                                for d in cfg.datasets], "size": cfg.size, "seed": cfg.seed,
                                   "derivation": ds.DERIVATION},
                      do_datasets, dataset_files, after=["pipeline"]))

    shared_judge = None
    if cfg.response_table.enabled:
        shared_judge = _response_steps(cfg, out, names, steps, judge, engine_factory)
    if train:
        seed_spec = cfg.seed_data if cfg.seed_data == "bundled" else _identity_of_file(cfg.seed_data)
        for name in names:
            folder = out / "train" / _slug(name)
            steps.append(Step(f"train {name}", {"train": tsettings, "seed_data": seed_spec, "tags": cfg.tags},
                              _trainer(cfg, tsettings, out / "datasets" / f"{_slug(name)}.jsonl", folder),
                              [folder / "train_stats.json"], after=["datasets"], clean=[folder]))
        eval_fields = {"eval": cfg.eval.model_dump()}
        reference = _reference_file(cfg, out, base_model, steps, eval_fields, engine_factory)
        for name in names:
            answers = out / "answers" / f"{_slug(name)}.jsonl"
            model = _finetuned(cfg, out / "train" / _slug(name))
            steps.append(Step(f"answer {name}", eval_fields, _answerer(cfg, model, answers, name, engine_factory),
                              [answers], after=[f"train {name}"], clean=[run_dir_for(answers)]))
            judged = out / "judgements" / f"{_slug(name)}.jsonl"
            steps.append(Step(f"judge {name}", {"judge": judge.model_dump(mode="json"), "reference": reference[1]},
                              _judger(judge, answers, reference[0], judged, engine_factory),
                              [judged], after=[f"answer {name}"] + reference[2], clean=[run_dir_for(judged)]))
    if cfg.analyses:
        steps.append(Step("analysis", {"files": names}, lambda: _analyse(run_dir, dataset_files, out),
                          [out / "analysis.md"], after=["datasets"]))
    try:
        record = run_steps(steps, out)
    finally:
        if shared_judge is not None:
            shared_judge.close()
    table = None
    if train:
        from .report import write_table

        size = record["datasets"].get("result", {}).get("size")
        table = write_table([(n, out / "judgements" / f"{_slug(n)}.jsonl", size) for n in names], out)
    from .report import write_report

    write_report(cfg, out, record, table)
    log.info("\nwhere the time went:\n" + time_table(record))
    response = out / "response_table.md"
    return {"table": table, "steps": record, "out": str(out),
            "response_table": str(response) if cfg.response_table.enabled and response.is_file() else None}


def _response_steps(cfg: ExperimentConfig, out: Path, names: list[str], steps: list, judge, factory: Callable):
    """`judge check` and `response table` (experiment/response_table.py): they run after `datasets`, before any
    fine-tune. One judge engine serves both, built on the first request the judge cache cannot answer."""
    from ..evaluate.judge_check import check_judge, data_identity
    from . import response_table as rt

    rcfg = cfg.response_table
    engine = rt.LazyEngine(lambda: factory(judge.model))
    judge_fields = {"judge": judge.model_dump(mode="json")}
    check_file = out / "judge_check" / "judge_check.json"
    if rcfg.judge_check:
        def do_check() -> dict:
            summary = check_judge(judge.model, judge.method, out / "judge_check", min_agreement=rcfg.min_agreement,
                                  engine=engine)
            from ..evaluate.judge_check import verdict_line

            for kind, s in summary["kinds"].items():
                log.info(f"experiment: judge check: {verdict_line(kind, s)}")
            return {k: {"agreement": s["agreement"], "passed": s["passed"]} for k, s in summary["kinds"].items()}

        steps.append(Step("judge check", {**judge_fields, "pairs": data_identity(), "min_agreement": rcfg.min_agreement},
                          do_check, [check_file], clean=[out / "judge_check"]))

    def do_table() -> dict:
        import json

        made = {n: ds.read(out / "datasets" / f"{_slug(n)}.jsonl") for n in names}
        comparisons, skipped = rt.response_comparisons(made, rcfg.limit, cfg.seed)
        if rcfg.instructions:
            sources = rt.instruction_sources(made, _seed_rows(cfg) if rcfg.seed_instructions else None)
            comparisons += rt.instruction_comparisons(sources, rcfg.limit, cfg.seed)
        try:
            rt.run_comparisons(comparisons, judge, out / "response_table", engine)
        finally:
            engine.close()  # the fine-tunes after this step need the memory
        check = json.loads(check_file.read_text()) if rcfg.judge_check else None
        rows = rt.write_table(comparisons, skipped, check, judge, out)
        return {"comparisons": {r["comparison"]: {"win_rate": round(r["win_rate"], 2), "n": r["n"]} for r in rows}}

    seed_spec = cfg.seed_data if cfg.seed_data == "bundled" else _identity_of_file(cfg.seed_data)
    steps.append(Step("response table", {**judge_fields, "response_table": rcfg.model_dump(mode="json"),
                                         "seed_data": seed_spec, "version": 1},
                      do_table, [out / "response_table.md", out / "response_table.csv"],
                      after=["datasets"] + (["judge check"] if rcfg.judge_check else []),
                      clean=[out / "response_table"]))
    return engine


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name.replace("+", "_plus_"))


def _trainer(cfg: ExperimentConfig, settings: dict, data: Path, folder: Path) -> Callable:
    def train() -> dict:
        from ..train.sft import load_train_config, train_sft

        tcfg = load_train_config(None, [f"{k}={v}" for k, v in settings.items()] + ["progress=false"])
        result = train_sft(ds.read(data), _seed_rows(cfg), folder, tcfg, tags=cfg.tags)
        return {"steps": result.steps, "seconds_per_step": result.seconds_per_step, "final_loss": result.final_loss}
    return train


def _finetuned(cfg: ExperimentConfig, folder: Path) -> ModelConfig:
    return make_model(engine=cfg.eval.engine, model=str(folder))


def _answerer(cfg: ExperimentConfig, model: ModelConfig, answers: Path, name: str, factory: Callable) -> Callable:
    def answer() -> dict:
        from ..evaluate.generate import generate_answers

        e = cfg.eval
        stats = generate_answers(_eval_rows(cfg), model, answers, suffix=e.suffix, temperature=e.temperature,
                                 top_p=e.top_p, max_tokens=e.max_tokens, generator=name,
                                 engine=None if factory is build_engine else factory(model))
        if stats.errors:
            raise UserError(f"{len(stats.errors)} questions could not be answered by {name} "
                            f"(first: {stats.errors[0]['error']}); run the same command again to retry them")
        return {"answers": stats.written + stats.already_done}
    return answer


def _reference_file(cfg: ExperimentConfig, out: Path, base_model: str, steps: list, eval_fields: dict,
                    factory: Callable) -> tuple[Path | str, dict, list[str]]:
    """(the reference answers, their identity, the steps that make them): a file, or a model's answers."""
    ref = cfg.reference
    if ref.file:
        return (ref.file if ref.file == "alpaca_eval" else Path(ref.file)), _identity_of_file(ref.file), []
    model = ref.model or make_model(engine=cfg.eval.engine, model=base_model)
    answers = out / "answers" / "reference.jsonl"
    steps.append(Step("answer reference", {**eval_fields, "model": model.model_dump(mode="json")},
                      _answerer(cfg, model, answers, "reference", factory), [answers], clean=[run_dir_for(answers)]))
    return answers, {"model": model.model_dump(mode="json")}, ["answer reference"]


def _judger(judge, answers: Path, reference, judged: Path, factory: Callable) -> Callable:
    def run_judge() -> dict:
        from ..evaluate.judge import judge as judge_pairs

        stats = judge_pairs(answers, reference, judge.model, judged, method=judge.method, both_orders=judge.both_orders,
                            max_tokens=judge.max_tokens,
                            engine=None if factory is build_engine else factory(judge.model))
        if stats.errors:
            raise UserError(f"{len(stats.errors)} answers could not be judged (first: {stats.errors[0]['error']}); "
                            "run the same command again to retry them")
        return {"judge_calls": stats.judge_calls, "cached_calls": stats.cached_calls}
    return run_judge


def _analyse(run_dir: Path, files: list[Path], out: Path) -> dict:
    from ..analysis.analyze import analyze
    from ..analysis.report import write_report as run_report

    result = analyze(run_dir, [str(f) for f in files], tokenizer="embedded", tagger_cfg=None)
    shutil.copy(run_dir / "analysis.md", out / "analysis.md")
    shutil.copy(run_dir / "analysis.json", out / "analysis.json")
    run_report(run_dir)
    return {"sets": {k: v.get("n") for k, v in result["sets"].items()}}
