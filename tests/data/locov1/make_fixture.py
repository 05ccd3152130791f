"""Write the LoCoV1 test fixture: ``queries.jsonl`` and ``documents.jsonl`` beside this file, in
the published schema of ``hazyresearch/LoCoV1-Queries`` (qid, query, answer_pids, dataset) and
``hazyresearch/LoCoV1-Documents`` (pid, passage, dataset), with the Hub's id style
(``<task>_Query_<i>``, ``<task>_Passage_<j>``).

What it holds, and why:

* three real task names, two of them odd (``2wikimqa`` starts with a digit,
  ``courtlistener_Plain_Text`` has capitals), with 6/7/5 documents and 4/5/3 queries;
* documents are English-looking sentences made from fixed word lists, 30 to 400 words long;
  each has a topic (a list of distinctive nouns) and borrows a few nouns of a second topic;
  query ``i`` asks for document ``i``; one query per task (two in ``2wikimqa``) also asks for
  a later document of the same topic, so it has two ``answer_pids``; a document or two per
  task is asked for by no query;
* a query names three nouns of its relevant documents' topic and one or two of another
  document's topic, among common words: a bag-of-words retriever ranks most queries right and
  some wrong, so nDCG@10 lies strictly between 0 and 1 (the retrieval tests rely on that).

Deterministic (``random.Random(SEED)``, no other input): ``python tests/data/locov1/make_fixture.py``
rewrites the same bytes. Change SEED or the lists only together with the tests that use it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 2402_07440  # the paper's arXiv number
# task -> (documents, queries, the queries with two relevant documents)
TASKS = {
    "gov_report": (6, 4, (1,)),
    "2wikimqa": (7, 5, (1, 3)),
    "courtlistener_Plain_Text": (5, 3, (0,)),
}
TOPICS = (
    "budget deficit revenue audit treasury tariff subsidy pension",
    "river flood levee harbor canal estuary barge dredging",
    "film director premiere studio sequel actor screenplay casting",
    "appeal verdict statute plaintiff defendant jury remand injunction",
    "orchard harvest apple pruning frost blossom cider graft",
    "satellite orbit rocket payload telemetry booster antenna probe",
    "museum gallery sculpture canvas curator exhibit fresco mural",
    "railway locomotive freight station signal track depot timetable",
    "hospital nurse clinic vaccine patient surgeon ward pharmacy",
    "school teacher pupil curriculum exam tuition classroom library",
)
NOUNS = "committee office report program record member state city plan group council".split()
VERBS = "reviewed described noted examined approved discussed questioned reported".split()
ADJECTIVES = "federal local annual recent public final large early second".split()
YEARS = [str(y) for y in range(1987, 2021, 3)]
SENTENCES = (
    "The {adj} {n1} {verb} the {n2} of the {n3}.",
    "In {year} the {n1} {verb} a {adj} {n2}.",
    "Members of the {n1} {verb} the {n2} and the {n3}.",
    "This {n1} was {verb} by the {adj} {n2}.",
    "The {n1} near the {n2} {verb} every {n3} in {year}.",
)
QUESTIONS = (
    "Which {n0} {verb} the {t1}, the {t2} and the {t3} after the {d1}?",
    "What did the {adj} {n0} say about the {t1} {t2} and the {d1} {t3}?",
    "Find the {n0} on the {t1} and {t2} that {verb} the {d1} and the {t3}.",
)
LENGTHS = (30, 60, 120, 250, 400)  # target words per document


def passage(rng: random.Random, topic: list[str], second: list[str], words: int) -> str:
    """Sentences until about ``words`` words; a noun slot takes a topic noun half the time and
    a noun of the second topic one time in eight."""

    def noun() -> str:
        draw = rng.random()
        if draw < 0.5:
            return rng.choice(topic)
        return rng.choice(second) if draw < 0.625 else rng.choice(NOUNS)

    sentences: list[str] = []
    count = 0
    while count < words:
        template = rng.choice(SENTENCES)
        sentence = template.format(
            adj=rng.choice(ADJECTIVES),
            verb=rng.choice(VERBS),
            year=rng.choice(YEARS),
            n1=noun(),
            n2=noun(),
            n3=noun(),
        )
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def question(rng: random.Random, topic: list[str], decoy: list[str]) -> str:
    """Three nouns of the relevant topic (t1..t3) and one of a decoy topic (d1)."""
    t1, t2, t3 = rng.sample(topic, 3)
    return rng.choice(QUESTIONS).format(
        n0=rng.choice(NOUNS),
        adj=rng.choice(ADJECTIVES),
        verb=rng.choice(VERBS),
        t1=t1,
        t2=t2,
        t3=t3,
        d1=rng.choice(decoy),
    )


def make(seed: int = SEED) -> tuple[list[dict], list[dict]]:
    """(queries, documents) rows, task by task. Query ``i`` asks for document ``i``; a query
    with two relevant documents also asks for one of the documents after the last query's,
    which shares its topic; the documents left over are asked for by nobody."""
    rng = random.Random(seed)
    queries, documents = [], []
    for task, (num_docs, num_queries, pairs) in TASKS.items():
        topics = [t.split() for t in rng.sample(TOPICS, num_docs)]
        partner = {i: num_queries + n for n, i in enumerate(pairs)}
        for i, j in partner.items():
            topics[j] = topics[i]
        pids = [f"{task}_Passage_{j}" for j in range(num_docs)]
        for j, pid in enumerate(pids):
            second = rng.choice([t for t in topics if t is not topics[j]])
            text = passage(rng, topics[j], second, rng.choice(LENGTHS))
            documents.append({"pid": pid, "passage": text, "dataset": task})
        for i in range(num_queries):
            relevant = [pids[i], pids[partner[i]]] if i in partner else [pids[i]]
            decoy = rng.choice([t for t in topics if t is not topics[i]])
            queries.append(
                {
                    "qid": f"{task}_Query_{i}",
                    "query": question(rng, topics[i], decoy),
                    "answer_pids": relevant,
                    "dataset": task,
                }
            )
    return queries, documents


def main(out: Path | None = None) -> None:
    """Write ``queries.jsonl`` and ``documents.jsonl`` into ``out`` (default: beside this file)."""
    out = Path(__file__).resolve().parent if out is None else Path(out)
    queries, documents = make()
    for name, rows in (("queries.jsonl", queries), ("documents.jsonl", documents)):
        with open(out / name, "w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
