"""The LoCoV1 mteb 2.x tasks: mteb's own evaluation (offline, results and predictions in a temp
folder) of a tiny deterministic hashing bag-of-words encoder on the fixture gives the nDCG@10
that pytrec_eval gives on the same scores computed here, independently of mteb and of the
LoCoV1 builder. mteb rounds its scores to 5 decimals, so that is the precision compared."""

from __future__ import annotations

import ast
import itertools
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

mteb = pytest.importorskip("mteb")
pytrec_eval = pytest.importorskip("pytrec_eval")
pytest.importorskip("datasets")
torch = pytest.importorskip("torch")

from mteb.abstasks.retrieval import AbsTaskRetrieval  # noqa: E402
from mteb.models.model_meta import ModelMeta  # noqa: E402

from hazyzoo.evaluation import locov1_mteb  # noqa: E402
from hazyzoo.evaluation.locov1_mteb import (  # noqa: E402
    MTEB_TASK_NAMES,
    locov1_mteb_task_class,
    locov1_mteb_tasks,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURE = REPO_ROOT / "tests" / "data" / "locov1"
SOURCES = {
    "queries_source": FIXTURE / "queries.jsonl",
    "documents_source": FIXTURE / "documents.jsonl",
}


class HashingBagOfWords:
    """A deterministic mteb encoder: each lower-cased word adds a fixed random float64 vector
    seeded by its CRC32; texts are compared by cosine similarity (computed here, in float64)."""

    def __init__(self, dim: int = 48) -> None:
        self.dim = dim
        self.encoded: list[str] = []

    @property
    def mteb_model_meta(self) -> ModelMeta:
        return ModelMeta.create_empty(
            overwrites={"name": "hazyzoo-tests/hashing-bag-of-words", "revision": "1"}
        )

    def embed(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim)
        for word in text.lower().split():
            vector += np.random.default_rng(zlib.crc32(word.encode())).standard_normal(self.dim)
        return vector

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        texts = [text for batch in inputs for text in batch["text"]]
        self.encoded += texts
        return np.stack([self.embed(t) for t in texts])

    @staticmethod
    def _unit(x) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        return torch.nn.functional.normalize(x.reshape(-1, x.shape[-1]), dim=-1)

    def similarity(self, embeddings1, embeddings2) -> torch.Tensor:
        return self._unit(embeddings1) @ self._unit(embeddings2).T

    def similarity_pairwise(self, embeddings1, embeddings2) -> torch.Tensor:
        return (self._unit(embeddings1) * self._unit(embeddings2)).sum(-1)


def fixture_task(task: str) -> tuple[dict[str, str], dict[str, str], dict[str, dict[str, int]]]:
    """(corpus, queries, qrels) of ``task`` read straight from the fixture files."""

    def rows(name: str) -> list[dict]:
        lines = (FIXTURE / name).read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["dataset"] == task]

    corpus = {r["pid"]: r["passage"] for r in rows("documents.jsonl")}
    queries = rows("queries.jsonl")
    texts = {r["qid"]: r["query"] for r in queries}
    return corpus, texts, {r["qid"]: dict.fromkeys(r["answer_pids"], 1) for r in queries}


def direct_scores(encoder: HashingBagOfWords, task: str) -> dict[str, dict[str, float]]:
    """Cosine scores of every (query, document) pair, computed with numpy."""
    corpus, queries, _ = fixture_task(task)
    docs = np.stack([encoder.embed(t) for t in corpus.values()])
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    run = {}
    for qid, text in queries.items():
        query = encoder.embed(text)
        sims = docs @ (query / np.linalg.norm(query))
        run[qid] = dict(zip(corpus, map(float, sims)))
    return run


@pytest.mark.parametrize("task", ["gov_report", "2wikimqa"])
def test_mteb_ndcg_at_10_equals_pytrec_eval_on_the_same_scores(task, tmp_path):
    encoder = HashingBagOfWords()
    tasks = locov1_mteb_tasks([task], **SOURCES, cache_dir=tmp_path / "hf")
    results = mteb.evaluate(
        encoder,
        tasks,
        cache=mteb.ResultCache(tmp_path / "mteb"),
        prediction_folder=tmp_path / "predictions",
        overwrite_strategy="always",
        show_progress_bar=False,
    )
    (result,) = results.task_results
    assert result.task_name == MTEB_TASK_NAMES[task]
    got = result.scores["test"][0]["ndcg_at_10"]
    assert result.get_score() == got  # ndcg_at_10 is the main score

    # The independent computation: our own cosine scores, pytrec_eval, the mean over queries.
    run = direct_scores(encoder, task)
    corpus, queries, qrels = fixture_task(task)
    for scores in run.values():  # no near-ties, so the ranking does not depend on tie-breaking
        ordered = sorted(scores.values())
        assert min(b - a for a, b in itertools.pairwise(ordered)) > 1e-9
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    want = sum(m["ndcg_cut_10"] for m in per_query.values()) / len(per_query)
    assert 0 < want < 1  # neither trivial nor impossible on the fixture
    assert got == pytest.approx(round(want, 5), abs=1e-6)
    assert abs(got - want) <= 5e-6 + 1e-12

    # mteb ranked with the same scores: its saved predictions are ours, for every pair.
    saved = json.loads(
        (tmp_path / "predictions" / f"{result.task_name}_predictions.json").read_text()
    )
    predicted = saved["default"]["test"]
    assert predicted.keys() == run.keys()
    for qid, scores in run.items():
        assert predicted[qid].keys() == scores.keys()
        for pid, score in scores.items():
            assert predicted[qid][pid] == pytest.approx(score, abs=1e-9)
    # every text was encoded once, queries as written and documents whole
    assert sorted(encoder.encoded) == sorted([*queries.values(), *corpus.values()])
    # mteb wrote its results under the temp folder we gave it, nowhere else
    assert list((tmp_path / "mteb").rglob(f"{result.task_name}.json"))


def test_task_classes_names_and_metadata():
    classes = [locov1_mteb_task_class(t) for t in MTEB_TASK_NAMES]
    assert [c.__name__ for c in classes] == list(MTEB_TASK_NAMES.values())
    assert len(set(MTEB_TASK_NAMES.values())) == 12
    assert MTEB_TASK_NAMES["gov_report"] == "LoCoV1GovReportRetrieval"
    assert MTEB_TASK_NAMES["2wikimqa"] == "LoCoV1TwoWikiMQARetrieval"
    assert locov1_mteb_task_class("gov_report") is classes[1]
    for cls in classes:
        assert issubclass(cls, AbsTaskRetrieval)
        meta = cls.metadata
        assert meta.name == cls.__name__ and meta.type == "Retrieval"
        assert (meta.main_score, meta.eval_splits) == ("ndcg_at_10", ["test"])
    tasks = locov1_mteb_tasks(**SOURCES)
    assert [t.metadata.name for t in tasks] == list(MTEB_TASK_NAMES.values())
    assert tasks[0].sources["queries_source"] == SOURCES["queries_source"]


def test_bad_task_names_and_data(tmp_path):
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'gov'"):
        locov1_mteb_task_class("gov")
    with pytest.raises(ValueError, match="unknown LoCoV1 task 'all'"):
        locov1_mteb_tasks(["gov_report", "all"])
    with pytest.raises(ValueError, match="a list of LoCoV1 task names or None"):
        locov1_mteb_tasks("gov_report")
    with pytest.raises(ValueError, match="more than once"):
        locov1_mteb_tasks(["qmsum", "qmsum"])
    (task,) = locov1_mteb_tasks(["qmsum"], **SOURCES, cache_dir=tmp_path)  # not in the fixture
    with pytest.raises(ValueError, match="task 'qmsum' has no queries"):
        task.load_data()


def test_mteb_is_optional(monkeypatch):
    # Without mteb the module imports, and building a task says how to install it.
    monkeypatch.setitem(sys.modules, "mteb", None)
    monkeypatch.setattr(locov1_mteb, "_CLASSES", {})
    with pytest.raises(ImportError, match="pip install mteb"):
        locov1_mteb_task_class("gov_report")
    # Only this module imports mteb, and only inside functions.
    package = REPO_ROOT / "hazyzoo"
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        nodes = tree.body if path.name == "locov1_mteb.py" else list(ast.walk(tree))
        for node in nodes:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "mteb" or n.startswith("mteb.") for n in names), path
