"""The zoo table: every part of the hazyzoo mission and its true status today.

``hazyzoo list`` prints it and the README carries the same table (a test keeps them equal).
Update an entry in the same change that lands or removes the part.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ZooEntry:
    """One part of the zoo: a model, a data set, an evaluation or a kernel library."""

    name: str
    paper: str
    kind: str
    entry_point: str
    status: str
    supports: str


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry(
        "BASED",
        "Arora et al. 2024, Simple linear attention LMs balance the recall-throughput tradeoff",
        "causal LM",
        "hazyzoo_based: BasedForCausalLM",
        "available",
        "Auto classes, generate (fixed-size recurrent cache, chunked prefill, CUDA-graph "
        "decode), Trainer and accelerate launch, peft LoRA, safetensors, device_map offload, "
        "push_to_hub + card, remote-code export, lm-eval entry point, Triton linear-attention "
        "kernels, converter from HazyResearch/based",
    ),
    ZooEntry(
        "MQAR",
        "Arora et al. 2023, Zoology",
        "data set",
        "hazyzoo.datasets_scripts.load('mqar')",
        "available",
        "datasets builder (tiny, zoology), used by `hazyzoo demo`",
    ),
    ZooEntry(
        "JRT-RNN / JRT-Prompt",
        "Arora et al. 2024, Just read twice",
        "causal LM + prompting",
        "hazyzoo_jrt: JrtForCausalLM; hazyzoo.jrt.read_twice",
        "available",
        "prefix linear attention on the shared stack (Auto classes, generate with a fixed-size "
        "cache, Trainer, peft, Hub card), exact and reference mask semantics, the JRT objective "
        "+ JrtDataCollator, Triton prefix kernels, converter from "
        "HazyResearch/prefix-linear-attention; JRT-Prompt for any causal LM and `hazyzoo eval "
        "recall` (SWDE/FDA/SQuAD formats, synthetic default)",
    ),
    ZooEntry(
        "RTF",
        "Parnichkun et al. 2024, State-free inference of state-space models",
        "SSM mixer, causal LM, sequence classifier",
        "hazyzoo_rtf: RtfForCausalLM, RtfForSequenceClassification; RtfFilter",
        "available",
        "the `rtf` mixer on the shared stack (Auto classes, generate with a fixed-size state, "
        "Trainer, peft, Hub card), state-free FFT kernels for both conventions, constraints and "
        "shared denominators, an exact recurrent decode (Triton step; the released recurrence "
        "as an option), the bidirectional LRA classifier, converter from ruke1ire/RTF, "
        "`hazyzoo demo rtf` (RTF vs S4D on sequential digits)",
    ),
    ZooEntry(
        "MAD",
        "Poli et al. 2024, Mechanistic design and scaling of hybrid architectures",
        "hybrid LMs + synthetic tasks",
        "hazyzoo_mad: MadForCausalLM, MadAutoEncoder; hazyzoo.datasets_scripts.load('mad'); "
        "hazyzoo eval mad",
        "available",
        "striped hybrids as a list of layers in MAD's names or shorthands over every zoo "
        "primitive (attention, sliding window, linear and gated linear attention, Hyena, "
        "multi-head Hyena, Hyena experts, Hyena-RTF, Mamba with a Triton scan, RTF, BASED's "
        "mixers; MLP, SwiGLU, MoE), each with a cache (Auto classes, generate, Trainer, peft, "
        "card), converter from athms/mad-lab, the six synthetic tasks as a datasets builder "
        "(every difficulty setting, the released generators reproduced), `hazyzoo eval mad` "
        "(Trainer, lr x wd grid, macro accuracy, MAD scores, JSON/table/PNG)",
    ),
    ZooEntry(
        "M2-BERT",
        "Saad-Falcon et al. 2024, Benchmarking and building long-context retrieval models",
        "retrieval encoder, masked LM",
        "hazyzoo_m2bert: M2BertForTextEncoding, M2BertForMaskedLM, M2BertModel",
        "available",
        "Monarch Mixer encoder up to 32k tokens (Auto classes, Trainer, peft LoRA, safetensors, "
        "device_map offload, card), the released padding semantics and a padding-invariant "
        "mode, sentence-transformers loading, converter from HazyResearch/m2 checkpoints, "
        "Triton block-diagonal matmul, FFT long convolutions",
    ),
    ZooEntry(
        "LoCoV1",
        "Saad-Falcon et al. 2024",
        "data set + evaluation",
        "hazyzoo.datasets_scripts.load('locov1'); hazyzoo eval locov1",
        "available",
        "12-task long-context retrieval as a datasets builder (Hub or local copy), nDCG@10 by "
        "pytrec_eval (also an evaluate metric), an mteb 2.x task per LoCoV1 task",
    ),
    ZooEntry(
        "VQ-VAE rotation trick",
        "Fifty et al. 2024, Restructuring vector quantization with the rotation trick",
        "autoencoder + quantizer",
        "hazyzoo_vqvae: VQVAEModel; VectorQuantizer; hazyzoo eval vq",
        "available",
        "gradient estimator as a switch (straight-through, the rotation trick, the reference "
        "VQGAN's form), EMA or learned codebooks, Euclidean/cosine, k-means init, dead-code "
        "restarts (AutoModel, Trainer, safetensors, card), Triton nearest-code search, "
        "`hazyzoo eval vq` (MSE, usage, perplexity, quantization error, PNG)",
    ),
    ZooEntry(
        "Prospector heads",
        "Machiraju et al. 2024, Prospector heads",
        "feature attribution head",
        "hazyzoo_prospector: ProspectorModel; hazyzoo eval prospector",
        "available",
        "concepts by k-means over frozen token embeddings of any encoder, concept-pair sketches "
        "over sequence / grid / edge-list token graphs (vectorised), predictive and inferential "
        "kernels, per-token maps and datum-level prediction (AutoModel, safetensors, card), a "
        "text front end for any encoder, golden parity with gmachiraju/K2, `hazyzoo eval "
        "prospector` (localisation AUPRC / AP / AUROC on planted motifs, PNG)",
    ),
    ZooEntry(
        "Hydragen",
        "Juravsky et al. 2024, Hydragen",
        "attention for HF Llama-family models",
        'hazyzoo.hydragen.generate; attn_implementation="hydragen"',
        "available",
        "exact shared-prefix attention inside transformers' `generate` for any "
        "attention-interface model (tested: Llama, Qwen2; fp32/fp16/bf16; GQA), hierarchical "
        "prefixes, ragged suffixes, greedy/sampling/eos/streamers, dynamic or static suffix "
        "cache (transformers' compiled decode, CUDA graphs), Triton split-key attention with "
        "log-sum-exp + merge kernels; no beam search",
    ),
    ZooEntry(
        "Cookbook",
        "Narayan et al. 2024, Cookbook: programmatic data generating templates",
        "data set + mixing + fine-tuning + evaluation",
        "hazyzoo.datasets_scripts.load('cookbook'); hazyzoo train; hazyzoo eval cookbook; "
        "hazyzoo eval gpt4all",
        "available",
        "13 documented templates with rule checkers (multiple choice, yes/no, coreference "
        "filling, copy, retrieval, counting, ordering) over random words or any tokenizer's "
        "vocabulary, a datasets builder (one config per template + a weighted mix), template "
        "mixing from per-template effects (stated algorithm), the alignment score and its "
        "correlation with accuracy, `hazyzoo train` (Trainer, accelerate launch DDP/FSDP/"
        "DeepSpeed, resume, peft LoRA) for any causal LM, the GPT4All tasks through lm-eval's "
        "Python API",
    ),
    ZooEntry(
        "Repeated sampling",
        "Brown et al. 2024, Large Language Monkeys",
        "evaluation",
        "hazyzoo eval coverage",
        "available",
        "resumable batched sampling from any causal LM (Hydragen shared-prefix generation "
        "where the model supports it, plain generate otherwise, optional vLLM), verifiers "
        "(math-verify answers, sandboxed code execution, exact match), unbiased pass@k to "
        "n = 10,000 (also an evaluate metric), coverage curves, the exponentiated power-law "
        "fit, majority-vote and reward-selection curves, monkey_business and JSONL sample "
        "files, table/JSON/PNG",
    ),
)

_COLUMNS = ("Part", "Paper", "Kind", "Entry point", "Status", "Supports")


def zoo_rows() -> list[tuple[str, ...]]:
    """The table as rows of strings, header first."""
    rows = [_COLUMNS]
    rows += [(e.name, e.paper, e.kind, e.entry_point, e.status, e.supports) for e in ZOO]
    return rows


def zoo_markdown() -> str:
    """The table as GitHub Markdown (what the README carries)."""
    rows = zoo_rows()
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def zoo_text() -> str:
    """The table as plain text for a terminal (part, kind, entry point, status, supports)."""
    keep = (0, 2, 3, 4, 5)
    rows = [[row[i] for i in keep] for row in zoo_rows()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(keep) - 1)]
    out = []
    for row in rows:
        head = "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths))
        out.append(f"{head}  {row[-1]}")
    return "\n".join(out)
