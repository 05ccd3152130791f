"""Write the LoCoV1 test fixture (``queries.jsonl``, ``documents.jsonl``) in the published
schema of hazyresearch/LoCoV1-Queries and -Documents.

Three real task names (``gov_report``, ``2wikimqa``, ``courtlistener_Plain_Text``), 6 documents
and 4 queries each; documents of 40 to 400 words drawn from a small vocabulary, each with its
own topic words; a query repeats a few topic words of its relevant document(s) (one query per
task has two) among common words, and shares some with a decoy, so a bag-of-words retriever
ranks some queries right and some wrong. Deterministic: ``python make_fixture.py`` rewrites the
same files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

TASKS = ("gov_report", "2wikimqa", "courtlistener_Plain_Text")
COMMON = (
    "the of and a to in is that for on with as by it at from this be are was an or which has "
    "have its report court case said year new first also more other than these after"
).split()
TOPICS = (
    "budget deficit revenue audit agency tariff customs subsidy pension grant",
    "river delta flood levee harbor canal tide estuary barge dredge",
    "film director premiere studio sequel actor score script casting reel",
    "appeal verdict statute plaintiff defendant jury remand tort lien ruling",
    "orchard harvest apple pruning frost blossom cider graft cellar yield",
    "satellite orbit launch rocket payload telemetry booster antenna solar probe",
    "museum gallery sculpture canvas curator exhibit fresco mural bronze archive",
    "railway locomotive freight station signal track depot carriage gauge timetable",
)


def main(out: Path = Path(__file__).parent) -> None:
    rng = random.Random(7)
    documents, queries = [], []
    for task in TASKS:
        topics = rng.sample(TOPICS, 6)
        pids = [f"{task}_Passage_{j}" for j in range(6)]
        for pid, topic in zip(pids, topics):
            words = topic.split()
            n = rng.choice((40, 90, 160, 250, 400))
            text = [
                rng.choice(words) if rng.random() < 0.25 else rng.choice(COMMON) for _ in range(n)
            ]
            documents.append({"pid": pid, "passage": " ".join(text), "dataset": task})
        for i in range(4):
            relevant = [pids[i]] if i != 1 else [pids[1], pids[2]]
            decoy = topics[(i + 3) % 6].split()
            words = [w for p in relevant for w in rng.sample(topics[pids.index(p)].split(), 3)]
            words += rng.sample(decoy, 2 + i % 3) + rng.sample(COMMON, 6)
            rng.shuffle(words)
            queries.append(
                {
                    "qid": f"{task}_Query_{i}",
                    "query": " ".join(words),
                    "answer_pids": relevant,
                    "dataset": task,
                }
            )
    for name, rows in (("documents.jsonl", documents), ("queries.jsonl", queries)):
        with open(out / name, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
