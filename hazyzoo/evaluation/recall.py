"""Recall evaluation: plain prompts versus JRT-Prompt on SWDE, FDA, SQuAD-completion, synthetic.

The recall-intensive tasks of BASED and JRT (Arora et al. 2024) give a document and ask for one
value from it; a model answers by greedy generation until ``"\\n"`` (at most 48 new tokens) and
is right when the generated text contains a gold answer, ignoring case. This module loads the
tasks, builds both prompt forms (:mod:`hazyzoo.jrt`), generates with any causal LM and scores:
:func:`evaluate_recall` compares plain and JRT-Prompt in one call.

Tasks and the columns they read (the Hub schema of the released sets):

- ``swde`` (``hazyresearch/based-swde``) and ``fda`` (``hazyresearch/based-fda``): ``text`` (the
  document, ending with the ``"{key}:"`` cue), ``key`` (the attribute asked for), ``value``
  (the gold answer). As the released JRT harness does, the trailing cue (and an SWDE
  ``"Summary of information above..."`` tail) is cut from ``text``, the document is made to end
  with ``"."`` and the key is capitalised; then plain is ``"{doc} {Key}:"`` and JRT is
  ``"Information about {Key}. {doc}\\n{doc} {Key}:"``.
- ``squad`` (``hazyresearch/based-squad``): ``text`` (the plain prompt: passage then a
  completion prefix), ``value``, ``context`` (the passage; anything from ``"Question:"`` on is
  dropped) and ``question`` (the original question, put first in the JRT prompt, as released).
- ``synthetic``: documents of made-up key-value facts generated here from a seed
  (:func:`synthetic_examples`); nothing is downloaded.

``value`` may be a string or a list of strings (any one of them counts). Data come as a
``datasets.Dataset`` (or ``DatasetDict``: its ``validation`` split), a Hub id, a list of row
dicts, or a local ``.json``/``.jsonl``/``.parquet`` file or a folder of them. JSON is read with
the standard library; Parquet files and Hub ids need ``datasets`` (imported only then).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hazyzoo.jrt import generate_until, read_once, read_twice

TASKS = ("synthetic", "swde", "fda", "squad")
PROMPTS = ("plain", "jrt", "both")
HUB_IDS = {
    "swde": "hazyresearch/based-swde",
    "fda": "hazyresearch/based-fda",
    "squad": "hazyresearch/based-squad",
}
REQUIRED_COLUMNS = {
    "swde": ("text", "key", "value"),
    "fda": ("text", "key", "value"),
    "squad": ("text", "value", "context", "question"),
}
SWDE_SUMMARY_MARKER = "Summary of information above..."
DATA_SUFFIXES = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class RecallExample:
    """One recall question: both prompt forms and the gold answers (any one is correct)."""

    id: str
    plain_prompt: str
    jrt_prompt: str
    answers: tuple[str, ...]
    context: str = ""
    question: str = ""

    def prompt(self, form: str) -> str:
        """The prompt of ``form`` (``"plain"`` or ``"jrt"``)."""
        if form == "plain":
            return self.plain_prompt
        if form == "jrt":
            return self.jrt_prompt
        raise ValueError(f"unknown prompt form {form!r}; choose 'plain' or 'jrt'")


@dataclass
class RecallResult:
    """Scores of one prompt form on one task: accuracy = correct / count, plus per-example
    records (id, prompt, prediction, answers, correct)."""

    task: str
    prompt: str
    accuracy: float
    count: int
    correct: int
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything in the result."""
        return asdict(self)


# --- scoring ------------------------------------------------------------------------------


def contains_answer(prediction: str, answers: str | Sequence[str]) -> bool:
    """True when ``prediction`` contains any of ``answers``, ignoring case (the paper's
    ``contains`` metric)."""
    if isinstance(answers, str):
        answers = [answers]
    if not answers:
        raise ValueError("answers is empty; give at least one gold answer")
    text = prediction.lower()
    return any(answer.lower() in text for answer in answers)


def score(
    predictions: Sequence[str],
    examples: Sequence[RecallExample],
    *,
    task: str = "custom",
    prompt: str = "plain",
) -> RecallResult:
    """Score ``predictions`` (one per example, same order) by case-insensitive containment."""
    if len(predictions) != len(examples):
        raise ValueError(f"got {len(predictions)} predictions for {len(examples)} examples")
    if not examples:
        raise ValueError("no examples to score")
    records = []
    for pred, ex in zip(predictions, examples):
        records.append(
            {
                "id": ex.id,
                "prompt": ex.prompt(prompt) if prompt in ("plain", "jrt") else None,
                "prediction": pred,
                "answers": list(ex.answers),
                "correct": contains_answer(pred, ex.answers),
            }
        )
    correct = sum(r["correct"] for r in records)
    return RecallResult(
        task=task,
        prompt=prompt,
        accuracy=correct / len(records),
        count=len(records),
        correct=correct,
        records=records,
    )


# --- the synthetic task -------------------------------------------------------------------

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
SYNTHETIC_STYLES = ("table", "sentences")
# Real attribute names for the "sentences" style; entities and values are made up.
SYNTHETIC_ATTRIBUTES = (
    "capital",
    "color",
    "river",
    "founder",
    "mascot",
    "motto",
    "harbor",
    "anthem",
    "festival",
    "currency",
    "mountain",
    "language",
)


def _made_up_words(count: int, syllables: int, seed: int, capitalise: bool) -> tuple[str, ...]:
    # Fixed pools (independent of the task seed), all of one length, so that no word is a
    # substring of another and containment scoring cannot credit a wrong value.
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
        word += rng.choice(_CONSONANTS)
        if word not in seen:
            seen.add(word)
            words.append(word.capitalize() if capitalise else word)
    return tuple(words)


SYNTHETIC_KEYS = _made_up_words(96, 2, seed=101, capitalise=False)
SYNTHETIC_VALUES = _made_up_words(96, 2, seed=202, capitalise=True)
SYNTHETIC_ENTITIES = _made_up_words(24, 2, seed=303, capitalise=True)


def synthetic_vocabulary() -> list[str]:
    """Every word and punctuation mark the synthetic task's prompts and answers use (for a
    word-level tokenizer), in a fixed order."""
    words = ["Information", "about", "The", "is", "of", ".", ":", *SYNTHETIC_ATTRIBUTES]
    words += [*SYNTHETIC_KEYS, *SYNTHETIC_VALUES, *SYNTHETIC_ENTITIES]
    out: list[str] = []
    for w in words:
        if w not in out:
            out.append(w)
    return out


SPECIAL_TOKENS = ("<pad>", "<eos>", "<unk>")


def synthetic_tokenizer(extra_words: Sequence[str] = ()) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over :func:`synthetic_vocabulary` (plus
    ``extra_words``), built offline with ``tokenizers``: ids 0, 1, 2 are ``<pad>``, ``<eos>``,
    ``<unk>``, then ``"\n"`` (a token of its own, so generation can stop at it), then the words.
    Words split at spaces, and punctuation is split off; decoding joins tokens with spaces."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["\n", *synthetic_vocabulary()]
    for w in extra_words:
        if not isinstance(w, str) or not w or any(c.isspace() for c in w if c != "\n"):
            raise ValueError(f"extra word {w!r} must be a non-empty str without spaces")
        if w not in words and w not in SPECIAL_TOKENS:
            words.append(w)
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[^\S\n]+"), "removed"),
            pre_tokenizers.Split(Regex(r"\n|[^\w\s]"), "isolated"),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


def _check_count(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def synthetic_documents(
    num_docs: int = 100, facts_per_doc: int = 8, *, seed: int = 0, style: str = "table"
) -> list[dict[str, Any]]:
    """Deterministic documents of made-up facts, one question each.

    ``style="table"`` writes facts as ``"{key}: {Value}."`` (key words and values are made-up,
    e.g. ``"sopal: Kirem."``), ``"sentences"`` as ``"The {attribute} of {Entity} is {Value}."``
    with the key ``"{attribute} of {Entity}"``. Keys are distinct within a document, and so are
    values; the asked key is drawn uniformly from the document's. Each row has ``context``,
    ``key``, ``value`` and ``facts`` (the (key, value) pairs in order). Same arguments, same
    documents; another seed gives other documents.
    """
    _check_count("num_docs", num_docs)
    _check_count("facts_per_doc", facts_per_doc)
    if style not in SYNTHETIC_STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {list(SYNTHETIC_STYLES)}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    if style == "table":
        keys: Sequence[str] = SYNTHETIC_KEYS
    else:
        keys = [f"{a} of {e}" for e in SYNTHETIC_ENTITIES for a in SYNTHETIC_ATTRIBUTES]
    most = min(len(keys), len(SYNTHETIC_VALUES))
    if facts_per_doc > most:
        raise ValueError(
            f"facts_per_doc must be <= {most} for style {style!r}, got {facts_per_doc}"
        )
    rng = random.Random(f"hazyzoo-synthetic-recall-{seed}")
    docs = []
    for _ in range(num_docs):
        doc_keys = rng.sample(keys, facts_per_doc)
        values = rng.sample(SYNTHETIC_VALUES, facts_per_doc)
        if style == "table":
            facts = [f"{k}: {v}." for k, v in zip(doc_keys, values)]
        else:
            facts = [f"The {k} is {v}." for k, v in zip(doc_keys, values)]
        asked = rng.randrange(facts_per_doc)
        docs.append(
            {
                "context": " ".join(facts),
                "key": doc_keys[asked],
                "value": values[asked],
                "facts": list(zip(doc_keys, values)),
            }
        )
    return docs


def synthetic_examples(
    num_docs: int = 100, facts_per_doc: int = 8, *, seed: int = 0, style: str = "table"
) -> list[RecallExample]:
    """:func:`synthetic_documents` as recall examples under the ``"information"`` template:
    plain ``"{doc} {key}:"``, JRT ``"Information about {key}. {doc}\\n{doc} {key}:"``."""
    docs = synthetic_documents(num_docs, facts_per_doc, seed=seed, style=style)
    return [
        RecallExample(
            id=f"synthetic-{seed}-{i}",
            plain_prompt=read_once(d["context"], d["key"], template="information"),
            jrt_prompt=read_twice(d["context"], d["key"], template="information"),
            answers=(d["value"],),
            context=d["context"],
            question=d["key"],
        )
        for i, d in enumerate(docs)
    ]


# --- the Hub tasks: loading ---------------------------------------------------------------


def _import_datasets(why: str) -> Any:
    try:
        import datasets
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"{why} needs the 'datasets' package (pip install 'hazyzoo[data]'), or give the "
            "data as a local .json/.jsonl file"
        ) from err
    return datasets


def _read_json(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # datasets also accepts JSON Lines in a .json file
        if isinstance(data, list):
            return data
        if isinstance(data, dict):
            columns = list(data.values())
            if columns and all(isinstance(c, list) for c in columns):  # columnar JSON
                if len({len(c) for c in columns}) != 1:
                    raise ValueError(f"{path}: the columns have different lengths")
                return [dict(zip(data, row)) for row in zip(*columns)]
            raise ValueError(f"{path}: expected a list of rows or a dict of columns")
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {n} is not JSON: {err.msg}") from err
    return rows


def _read_file(path: Path) -> list[dict[str, Any]]:
    if path.suffix in (".json", ".jsonl"):
        return _read_json(path)
    if path.suffix == ".parquet":
        datasets = _import_datasets(f"reading {path}")
        return list(datasets.Dataset.from_parquet(str(path)))
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {DATA_SUFFIXES}")


def _data_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{directory} holds no {'/'.join(DATA_SUFFIXES)} files")
    validation = [p for p in files if "validation" in p.name]  # the split the tasks evaluate
    return validation or files


def _rows_from(data: Any, task: str, split: str) -> tuple[list[Mapping[str, Any]], str]:
    """Rows of ``data`` and a description of where they came from."""
    if data is None:
        data = HUB_IDS[task]
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_file():
            return _read_file(path), str(path)
        if path.is_dir():
            rows: list[Mapping[str, Any]] = []
            for f in _data_files(path):
                rows.extend(_read_file(f))
            return rows, str(path)
        text = str(data)
        if text.count("/") == 1 and not text.startswith((".", "/")) and not Path(text).suffix:
            datasets = _import_datasets(f"loading the Hub data set {text}")
            return list(datasets.load_dataset(text, split=split)), f"{text} ({split})"
        raise FileNotFoundError(f"data {text} is neither a file, a folder, nor a Hub id")
    if isinstance(data, Mapping) and not hasattr(data, "column_names"):
        raise TypeError("data must be rows, a Dataset, a path or a Hub id, not one dict")
    if hasattr(data, "keys") and hasattr(data, "column_names") and isinstance(data, Mapping):
        # A DatasetDict: its ``split`` split, or its only split.
        if split in data:
            return list(data[split]), f"DatasetDict[{split!r}]"
        if len(data) == 1:
            (only,) = data.keys()
            return list(data[only]), f"DatasetDict[{only!r}]"
        raise ValueError(f"the DatasetDict has no {split!r} split; it has {sorted(data)}")
    if isinstance(data, Iterable):
        return list(data), type(data).__name__
    raise TypeError(f"data must be rows, a Dataset, a path or a Hub id, got {type(data).__name__}")


def _answers(value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"{where}: 'value' must be a string or a non-empty list of strings")
    out = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{where}: gold answer {v!r} must be a non-empty string")
        out.append(v.strip())
    return tuple(out)


def _field(row: Mapping[str, Any], name: str, where: str) -> str:
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: column {name!r} must be a non-empty string, got {value!r}")
    return value


def _key_value_example(row: Mapping[str, Any], index: int, task: str) -> RecallExample:
    """SWDE/FDA: clean the document as the released JRT harness does, then build both forms."""
    where = f"{task} row {index}"
    text, key = _field(row, "text", where), _field(row, "key", where).strip()
    text = text.split(SWDE_SUMMARY_MARKER)[0]
    cue = (key + ":").lower()
    text = text.rstrip()
    while text.lower().endswith(cue):
        text = text[: -len(cue)].rstrip()
    doc = text.strip().strip(".").strip()
    if not doc:
        raise ValueError(f"{where}: 'text' holds no document besides the {key!r} cue")
    doc += "."
    display_key = key[0].upper() + key[1:]
    return RecallExample(
        id=str(row.get("doc_id", row.get("id", index))),
        plain_prompt=read_once(doc, display_key, template="information"),
        jrt_prompt=read_twice(doc, display_key, template="information"),
        answers=_answers(row["value"], where),
        context=doc,
        question=display_key,
    )


def _squad_example(row: Mapping[str, Any], index: int) -> RecallExample:
    """SQuAD-completion: plain is ``text``; JRT puts the question and the passage first."""
    where = f"squad row {index}"
    plain = _field(row, "text", where).strip()
    context = _field(row, "context", where).split("Question:")[0].strip()
    question = _field(row, "question", where).strip()
    if not context:
        raise ValueError(f"{where}: 'context' is empty before 'Question:'")
    if plain.startswith(context) and plain[len(context) :].strip():
        # text = passage + completion prefix: the passage twice, then the prefix.
        completion = plain[len(context) :].strip()
        jrt = read_twice(context, completion, template="squad", preamble=question)
    else:
        # text does not start with the passage: the released form, question + passage + text.
        completion = plain
        jrt = f"{question} {context}\n{plain}"
    return RecallExample(
        id=str(row.get("new_id", row.get("id", index))),
        plain_prompt=plain,
        jrt_prompt=jrt,
        answers=_answers(row["value"], where),
        context=context,
        question=completion,
    )


def _check_limit(limit: Any) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"limit must be an int or None, got {type(limit).__name__} {limit!r}")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    return limit


def _check_task(task: Any) -> str:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {list(TASKS)}")
    return task


def load_recall_task(
    task: str,
    data: Any = None,
    *,
    limit: int | None = None,
    split: str = "validation",
    seed: int = 0,
    num_docs: int = 100,
    facts_per_doc: int = 8,
    style: str = "table",
) -> list[RecallExample]:
    """The examples of ``task`` (see the module doc), the first ``limit`` of them if given.

    ``data`` is for ``swde``/``fda``/``squad`` (default: the task's Hub id, read with
    ``datasets``); ``seed``, ``num_docs``, ``facts_per_doc`` and ``style`` are for
    ``synthetic``. Missing columns, empty sets and bad values are ``ValueError``\\s naming them.
    """
    _check_task(task)
    limit = _check_limit(limit)
    if task == "synthetic":
        if data is not None:
            raise ValueError("the synthetic task is generated here; data must be None for it")
        if limit is not None:
            num_docs = min(_check_count("num_docs", num_docs), limit)
        return synthetic_examples(num_docs, facts_per_doc, seed=seed, style=style)
    rows, source = _rows_from(data, task, split)
    if not rows:
        raise ValueError(f"the {task} data from {source} has no rows")
    if limit is not None:
        rows = rows[:limit]
    required = REQUIRED_COLUMNS[task]
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise TypeError(f"{task} row {i} from {source} is a {type(row).__name__}, not a dict")
        missing = [c for c in required if c not in row]
        if missing:
            raise ValueError(
                f"the {task} data from {source} lacks column(s) {missing} (row {i}); "
                f"the {task} schema needs {list(required)}"
            )
    if task == "squad":
        return [_squad_example(row, i) for i, row in enumerate(rows)]
    return [_key_value_example(row, i, task) for i, row in enumerate(rows)]


# --- the runner ---------------------------------------------------------------------------


def _forms(prompt: str) -> list[str]:
    if prompt not in PROMPTS:
        raise ValueError(f"unknown prompt {prompt!r}; choose from {list(PROMPTS)}")
    return ["plain", "jrt"] if prompt == "both" else [prompt]


def evaluate_recall(
    model: Any,
    tokenizer: Any,
    task: str = "synthetic",
    *,
    data: Any = None,
    examples: Sequence[RecallExample] | None = None,
    prompt: str = "both",
    limit: int | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 48,
    stop: str | Sequence[str] | None = "\n",
    max_length: int | None = None,
    device: Any = None,
    seed: int = 0,
    num_docs: int = 100,
    facts_per_doc: int = 8,
    style: str = "table",
    progress: bool = False,
) -> dict[str, RecallResult]:
    """Evaluate a causal LM on a recall task with plain prompts, JRT-Prompt, or both.

    Loads ``task`` with :func:`load_recall_task` (or takes ``examples`` as given), generates
    greedily with :func:`hazyzoo.jrt.generate_until` (the paper's settings by default: until
    ``"\\n"``, at most 48 new tokens) and scores by case-insensitive containment. Returns
    ``{"plain": RecallResult, "jrt": RecallResult}`` for ``prompt="both"``, else the one form.
    """
    forms = _forms(prompt)
    _check_task(task)
    if examples is None:
        examples = load_recall_task(
            task,
            data,
            limit=limit,
            seed=seed,
            num_docs=num_docs,
            facts_per_doc=facts_per_doc,
            style=style,
        )
    else:
        if data is not None:
            raise ValueError("give either examples or data, not both")
        examples = list(examples)[: _check_limit(limit)]
        if not examples:
            raise ValueError("examples is empty")
    results = {}
    for form in forms:
        predictions = generate_until(
            model,
            tokenizer,
            [ex.prompt(form) for ex in examples],
            max_new_tokens=max_new_tokens,
            stop=stop,
            batch_size=batch_size,
            max_length=max_length,
            device=device,
            progress=progress,
        )
        results[form] = score(predictions, examples, task=task, prompt=form)
    return results


def format_table(results: Mapping[str, RecallResult]) -> str:
    """A short text table: one line per prompt form with accuracy and count."""
    lines = [f"{'prompt':<8} {'accuracy':>9} {'n':>6}"]
    for form, result in results.items():
        lines.append(f"{form:<8} {result.accuracy:>9.3f} {result.count:>6}")
    return "\n".join(lines)


__all__ = [
    "HUB_IDS",
    "PROMPTS",
    "REQUIRED_COLUMNS",
    "SYNTHETIC_STYLES",
    "TASKS",
    "RecallExample",
    "RecallResult",
    "contains_answer",
    "evaluate_recall",
    "format_table",
    "load_recall_task",
    "score",
    "synthetic_documents",
    "synthetic_examples",
    "synthetic_tokenizer",
    "synthetic_vocabulary",
]
