"""`backforth push`: what would go to the Hub, the card it would carry, and the errors a user can cause.

The run dirs are made by the real pipeline (`run_method` with the deterministic `FakeEngine`, as
tests/pipeline/test_runner.py runs it). The Hub itself cannot be reached from here: only its two
network calls (`HfApi.create_repo`, `HfApi.create_commit`) are replaced, to see what would be sent;
the token lookup, the repo id check, the commit operations and the card are the real ones.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx2
import pyarrow.parquet as pq
import pytest
from fake_engine import FakeEngine, section, stage_of
from huggingface_hub import CommitOperationAdd, DatasetCard, HfApi, RepoUrl, constants
from huggingface_hub.errors import HfHubHTTPError
from typer.testing import CliRunner

from backforth.cli import app
from backforth.config import build_config
from backforth.engines.base import Request, Result
from backforth.errors import UserError
from backforth.pipeline.method import run_method
from backforth.pipeline.card import DATA_FILES
from backforth.push import (HubUnreachableError, NotARunError, NothingToPublishError, NotLoggedInError, PushError,
                            card_for_hub, files_to_push, push)

REPO = "someone/bft-pairs"
FAKE_TOKEN = "hf_notarealtokenjustfortests0123456789"
DATASET_FILES = ["README.md", "sft.parquet", "distilled.parquet", "stats.json", "config.yaml"]


def doc_text(i: int) -> str:
    return f"Document {i} explains topic {i}. " + " ".join(f"fact{i}x{j}" for j in range(45)) + f" End of document {i}."


def responder(req: Request) -> Result | str:
    """Deterministic answers by stage and row id: d3's rewrite is refused, so the run has a reject."""
    stage, key = stage_of(req), req.key
    if stage == "backtranslate":
        return f"What should I know about subject number {int(key[1:])} in practice?"
    if stage == "curate":
        return "Direct, complete and expert.\nScore: 5"
    if stage == "rewrite":
        if key == "d3":
            return "I'm sorry, but I can't help with that."
        draft = section(req.messages[0]["content"], "<draft>", "</draft>")
        return f"Rewritten for {key}: {' '.join(draft.split()[:6])}"
    return f"Distilled answer to: {req.messages[-1]['content']}"


def make_run(folder: Path, texts: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    off = {name: {"enabled": False} for name in ("dedup_documents", "dedup_instructions", "decontaminate", "grounding")}
    cfg = build_config({"input": {"path": str(docs)}, "runner": {"progress": False, "chunk_size": 3}, **off})
    out = folder / "run"
    engine = FakeEngine(responder, context_length=1000)
    run_method(cfg, out, engine_factory=lambda model_cfg: engine)
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """One finished run with 3 pairs, a reject, and what a user adds to a run dir later."""
    out = make_run(tmp_path_factory.mktemp("push"), [doc_text(i) for i in range(4)])
    (out / "analysis_work").mkdir()
    (out / "analysis_work" / "embeddings.parquet").write_bytes(b"not for the hub")
    (out / "report.html").write_text("<html></html>")
    return out


@pytest.fixture
def run_dir(made, tmp_path) -> Path:
    """A copy of the finished run, for tests that change it."""
    return Path(shutil.copytree(made, tmp_path / "run"))


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    return FAKE_TOKEN


class FakeHub:
    """Stands in for the two network calls; records what they were given."""

    def __init__(self, repo_error: Exception | None = None, commit_error: Exception | None = None):
        self.repo_error, self.commit_error = repo_error, commit_error
        self.repos: list[tuple[str, dict]] = []
        self.commits: list[tuple[str, list, dict]] = []

    def create_repo(self, api, repo_id, **kw):
        self.repos.append((repo_id, kw))
        if self.repo_error:
            raise self.repo_error
        return RepoUrl(f"https://huggingface.co/datasets/{repo_id}")

    def create_commit(self, api, repo_id, operations, **kw):
        if self.commit_error:
            raise self.commit_error
        self.commits.append((repo_id, list(operations), kw))

    def install(self, monkeypatch) -> FakeHub:
        monkeypatch.setattr(HfApi, "create_repo", lambda api, repo_id, **kw: self.create_repo(api, repo_id, **kw))
        monkeypatch.setattr(HfApi, "create_commit", lambda api, repo_id, ops, **kw: self.create_commit(api, repo_id, ops, **kw))
        return self

    def sent(self) -> dict[str, bytes]:
        (_, ops, _), = self.commits
        out = {}
        for op in ops:
            assert isinstance(op, CommitOperationAdd)
            src = op.path_or_fileobj
            out[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
        return out


def http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} Client Error", response=httpx2.Response(status, request=request))


# ---- what is selected ---------------------------------------------------------------------------

def test_the_run_is_a_real_one(made):
    stats = json.loads((made / "stats.json").read_text())
    assert stats["outputs"]["sft"] == 3 and stats["outputs"]["distilled"] == 3 and stats["outputs"]["rejects"] == 1
    assert any((made / "stages").iterdir())


def test_files_to_push_are_the_dataset_and_its_description(made):
    assert [p.name for p in files_to_push(made, with_rejects=False)] == DATASET_FILES
    with_rejects = [p.name for p in files_to_push(made, with_rejects=True)]
    assert with_rejects == ["README.md", "sft.parquet", "distilled.parquet", "rejects.jsonl", "stats.json", "config.yaml"]
    for path in files_to_push(made, with_rejects=True):
        assert path.parent == made and path.is_file()  # nothing under stages/, analysis_work/ or anywhere else
        assert "stages" not in path.relative_to(made).parts


def test_distilled_is_pushed_only_when_the_run_has_it(run_dir):
    (run_dir / "distilled.parquet").unlink()
    assert [p.name for p in files_to_push(run_dir)] == ["README.md", "sft.parquet", "stats.json", "config.yaml"]


@pytest.mark.parametrize("missing", ["stats.json", "sft.parquet"])
def test_an_unfinished_run_is_refused_naming_what_is_missing(run_dir, missing):
    (run_dir / missing).unlink()
    with pytest.raises(NotARunError, match=f"{run_dir}: not a finished run \\(no {missing}\\).*backforth run"):
        files_to_push(run_dir)


def test_a_folder_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(NotARunError, match="no such run dir"):
        files_to_push(tmp_path / "nope")


def test_a_run_with_no_pair_has_nothing_to_publish(tmp_path):
    out = make_run(tmp_path, ["tiny", "also tiny"])  # both too short: every row rejected by prepare
    assert json.loads((out / "stats.json").read_text())["outputs"]["sft"] == 0
    with pytest.raises(NothingToPublishError, match="0 pairs, so there is nothing to publish"):
        files_to_push(out)
    result = CliRunner().invoke(app, ["push", str(out), REPO])
    assert result.exit_code == 2 and "nothing to publish" in result.output


def test_push_errors_are_user_errors():
    for cls in (PushError, NotARunError, NothingToPublishError, NotLoggedInError, HubUnreachableError):
        assert issubclass(cls, UserError) and cls.exit_code == 2


# ---- the card -----------------------------------------------------------------------------------

def test_the_run_dirs_own_card_is_a_dataset_card_that_loads(made, tmp_path):
    import datasets

    card = DatasetCard.load(made / "README.md")
    configs = {c["config_name"]: c for c in card.data.configs}
    assert set(configs) == set(DATA_FILES)
    for name, c in configs.items():
        assert (made / c["data_files"][0]["path"]).is_file()
    want = [r["id"] for r in pq.read_table(made / "sft.parquet").to_pylist()]
    pairs = datasets.load_dataset(str(made), split="train", cache_dir=str(tmp_path / "cache"))
    assert pairs["id"] == want == ["d0", "d1", "d2"]
    assert pairs[0]["messages"][1]["role"] == "assistant"
    distilled = datasets.load_dataset(str(made), "distilled", split="train", cache_dir=str(tmp_path / "cache"))
    assert distilled.num_rows == 3


def test_the_hub_card_loads_with_the_repo_id(made, tmp_path):
    own = (made / "README.md").read_bytes()
    pushed = [p.name for p in files_to_push(made)]
    text = card_for_hub(made, REPO, pushed)
    assert (made / "README.md").read_bytes() == own  # the run dir's card is not changed

    card = DatasetCard(text)
    for c in card.data.configs:
        assert c["data_files"][0]["path"] in pushed
    assert f'load_dataset("{REPO}", split="train")' in text
    assert f'load_dataset("{REPO}", "distilled", split="train")' in text
    assert str(made.resolve()) not in text and "<user>/<repo>" not in text
    assert "## Files in this repository" in text and "`rejects.jsonl`" in text.split("## Files in this repository")[1]
    (tmp_path / "README.md").write_text(text, encoding="utf-8")
    assert DatasetCard.load(tmp_path / "README.md").data.configs == card.data.configs


# ---- the upload (its network calls replaced) ----------------------------------------------------

def test_push_sends_one_commit_of_the_selected_files(made, monkeypatch, token, capsys):
    """The upload cannot be reached from here: create_repo and create_commit are replaced, and what they
    would send is checked."""
    hub = FakeHub().install(monkeypatch)
    url = push(made, REPO, private=True, with_rejects=False)
    assert url == f"https://huggingface.co/datasets/{REPO}"
    assert hub.repos == [(REPO, {"repo_type": "dataset", "private": True, "exist_ok": True})]
    (repo_id, _ops, kw), = hub.commits
    assert repo_id == REPO and kw["repo_type"] == "dataset"
    sent = hub.sent()
    assert list(sent) == DATASET_FILES
    assert sent["README.md"].decode() == card_for_hub(made, REPO, DATASET_FILES)
    assert sent["sft.parquet"] == (made / "sft.parquet").read_bytes()
    assert token not in capsys.readouterr().out
    assert all(token.encode() not in body for body in sent.values())


def test_push_with_rejects_and_a_public_repo(made, monkeypatch, token):
    """Network calls replaced (the Hub cannot be reached from here)."""
    hub = FakeHub().install(monkeypatch)
    push(made, REPO, with_rejects=True)
    assert hub.repos[0][1]["private"] is None  # public, unless the org's default is private
    assert "rejects.jsonl" in hub.sent()


def test_the_cli_pushes(made, monkeypatch, token):
    """Network calls replaced (the Hub cannot be reached from here)."""
    hub = FakeHub().install(monkeypatch)
    result = CliRunner().invoke(app, ["push", str(made), REPO, "--private", "--with-rejects"])
    assert result.exit_code == 0, result.output
    assert f"pushed to https://huggingface.co/datasets/{REPO}" in result.output and token not in result.output
    assert hub.repos[0][1]["private"] is True and "rejects.jsonl" in hub.sent()


def test_no_token_is_refused_before_any_call(made, monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no_saved_token"))
    hub = FakeHub().install(monkeypatch)
    with pytest.raises(NotLoggedInError, match="not logged in.*hf auth login.*HF_TOKEN"):
        push(made, REPO)
    assert hub.repos == [] and hub.commits == []
    result = CliRunner().invoke(app, ["push", str(made), REPO])
    assert result.exit_code == 2 and "not logged in" in result.output


def test_a_bad_repo_id_is_refused(made, token):
    with pytest.raises(PushError, match="repo id 'not/a/repo'"):
        push(made, "not/a/repo")


def test_the_network_being_down_is_a_user_error(made, monkeypatch, token):
    """Network calls replaced by ones that fail as the client does (the Hub cannot be reached from here)."""
    FakeHub(repo_error=httpx2.ConnectError("[Errno -3] Temporary failure in name resolution")).install(monkeypatch)
    with pytest.raises(HubUnreachableError, match="cannot reach the Hugging Face Hub.*ConnectError.*push again"):
        push(made, REPO)


@pytest.mark.parametrize("status, error, words", [(401, NotLoggedInError, "refused the token"),
                                                   (403, NotLoggedInError, "may not write there"),
                                                   (500, PushError, "answered 500")])
def test_the_hub_refusing_is_a_user_error(made, monkeypatch, token, status, error, words):
    """Network calls replaced by ones that fail as the Hub does (the Hub cannot be reached from here)."""
    FakeHub(commit_error=http_error(status)).install(monkeypatch)
    with pytest.raises(error, match=words) as caught:
        push(made, REPO)
    assert token not in str(caught.value)
