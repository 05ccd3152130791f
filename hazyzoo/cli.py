"""The ``hazyzoo`` command: list, demo, train, convert, card, eval.

Bad input (missing or invalid paths, unreadable config or weight files, bad values) ends in one
line ``hazyzoo <command>: error: ...`` on stderr and exit status 1; argparse usage errors exit 2.
No command writes over its input or over a file the user wrote unless told to (``--overwrite``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Errors that mean "bad input" and are reported in one line (others keep their traceback).
_INPUT_ERRORS = (ValueError, TypeError, OSError, ImportError, RuntimeError)
# The extra that provides what a command imports lazily, for the missing-package hint.
_EXTRAS = {"demo": "demo", "eval": "eval", "train": "data"}


def _cmd_list(args: argparse.Namespace) -> int:
    from hazyzoo.zoo import zoo_markdown, zoo_text

    print(zoo_markdown() if args.markdown else zoo_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--output-dir {out} exists and is not a directory")
    if args.which == "jrt":
        from hazyzoo.demo_jrt import run_jrt_demo

        run_jrt_demo(out, seed=args.seed, quick=args.quick)
    elif args.which == "rtf":
        from hazyzoo.demo_rtf import run_rtf_demo

        run_rtf_demo(out, seed=args.seed, quick=args.quick)
    else:
        from hazyzoo.demo import run_demo

        run_demo(out, seed=args.seed, quick=args.quick)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    if args.head is not None and args.architecture != "m2bert":
        raise ValueError("--head: only for `hazyzoo convert m2bert`")
    if args.architecture == "rtf":
        return _convert_rtf(args)
    rtf_flags = [f for f, d in _RTF_FLAGS.items() if getattr(args, d) not in (None, False)]
    if rtf_flags:
        raise ValueError(f"{', '.join(rtf_flags)}: only for `hazyzoo convert rtf`")
    if args.architecture == "jrt":
        from hazyzoo.conversion.jrt import convert_jrt as convert
    elif args.architecture == "mad":
        from hazyzoo.conversion.mad import convert_mad as convert
    elif args.architecture == "m2bert":
        from hazyzoo.conversion.m2bert import convert_m2bert

        def convert(src: Path, out: Path | None):  # the other converters' signature
            conversion = convert_m2bert(src, out, head=args.head)
            print("\n".join(conversion.report()[1:]))
            return conversion.model

    else:
        from hazyzoo.conversion.based import convert_based as convert
    return _convert_reference(args, convert)


# The flags of `convert rtf` -> their argparse dest (the reference constructor's names).
_RTF_FLAGS = {
    "--reference-config": "reference_config",
    "--d-model": "d_model",
    "--state-size": "state_size",
    "--trunc-len": "trunc_len",
    "--num-a": "num_a",
    "--bidirectional": "bidirectional",
    "--init": "init",
    "--constraint": "constraint",
    "--rtf-class": "rtf_class",
    "--base": "base",
    "--filters-only": "filters_only",
}


def _convert_rtf(args: argparse.Namespace) -> int:
    from hazyzoo.conversion.rtf import convert_rtf, reference_arguments

    names = ("d_model", "state_size", "trunc_len", "num_a", "bidirectional", "init", "constraint")
    overrides = {name: getattr(args, name) for name in names}
    overrides["class"] = args.rtf_class  # the key of the reference-config JSON
    reference = reference_arguments(args.reference_config, overrides)
    result = convert_rtf(
        args.src,
        args.out,
        **reference,
        base=args.base,
        filters_only=args.filters_only,
        overwrite=args.overwrite,
        base_model=args.base_model,
        tokenizer=args.tokenizer,
        remote_code=args.remote_code,
    )
    print("\n".join(result.report()))
    return 0


def _convert_reference(args: argparse.Namespace, convert) -> int:
    from hazyzoo.conversion.common import (
        check_output_directory,
        check_source_tokenizer,
        check_tokenizer_fits,
        copy_tokenizer_files,
        load_tokenizer,
        save_tokenizer,
    )
    from hazyzoo.hub import released_tokenizer, write_model_card

    src, out = Path(args.src), Path(args.out)
    if not src.is_dir():
        raise FileNotFoundError(f"SRC {src} is not a directory")
    check_output_directory(src, out, overwrite=args.overwrite)
    # Everything that can fail is checked before anything is written.
    tokenizer = load_tokenizer(args.tokenizer) if args.tokenizer else None
    model = convert(src, None)
    vocab_size = model.config.vocab_size
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, vocab_size, args.tokenizer)
        warning = None
    else:
        warning = check_source_tokenizer(src, vocab_size)

    model.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    print(f"converted {src} -> {out} ({n:,} parameters, model_type {model.config.model_type})")
    if tokenizer is not None:
        files = save_tokenizer(tokenizer, out)
        print(f"tokenizer: saved the tokenizer of {args.tokenizer} ({', '.join(files)})")
    elif copied := copy_tokenizer_files(src, out):
        print(f"tokenizer: copied {', '.join(copied)} from {src}")
        if warning:
            print(f"tokenizer: warning: {warning}")
    else:
        released = released_tokenizer(model.config.to_dict())
        hint = f"; the released models use the {released} tokenizer" if released else ""
        print(f"tokenizer: none in {src} (pass --tokenizer DIR to add one){hint}")
    _fit_tokenizer_length(model, out)
    if args.remote_code:
        from hazyzoo.remote_code import write_remote_code

        written = write_remote_code(out, model)
        print(
            f"remote code: wrote {len(written) - 1} modules and config.json auto_map "
            "(loads with trust_remote_code=True without hazyzoo)"
        )
    card = write_model_card(
        out, base_model=args.base_model, replace_handwritten=args.overwrite, overwrite=True
    )
    print(f"card: wrote {card}")
    return 0


def _fit_tokenizer_length(model: Any, out: Path) -> None:
    """Give the saved tokenizer the model's input limit (an encoder's ``max_input_length``):
    the released M2-BERT models reuse bert-base-uncased, whose 512 would make
    ``truncation=True`` cut 32k-token documents at 512 tokens."""
    from hazyzoo.conversion.common import load_tokenizer, save_tokenizer
    from hazyzoo.hub import has_tokenizer

    limit = getattr(model.config, "max_input_length", None)
    if limit is None or not has_tokenizer(out):
        return
    tokenizer = load_tokenizer(out)
    if tokenizer.model_max_length != limit:
        old = tokenizer.model_max_length
        tokenizer.model_max_length = limit
        save_tokenizer(tokenizer, out)
        shown = "unset" if old >= 10**18 else old  # transformers' "no limit" is a huge int
        print(f"tokenizer: model_max_length {shown} -> {limit} (the model's input limit)")


def _cmd_card(args: argparse.Namespace) -> int:
    from hazyzoo.hub import write_model_card

    if not Path(args.model_dir).is_dir():
        raise FileNotFoundError(f"MODEL_DIR {args.model_dir} is not a directory")
    path = write_model_card(
        args.model_dir,
        repo_id=args.repo_id,
        base_model=args.base_model,
        tags=args.tag or None,
        license=args.license,
        datasets=args.dataset or None,
        language=args.language or None,
        replace_handwritten=args.overwrite,
    )
    print(f"wrote {path}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    """``hazyzoo train``: fine-tuning on Trainer (see :mod:`hazyzoo.train`)."""
    from hazyzoo.train import run_from_args

    return run_from_args(args)


def _cmd_eval(args: argparse.Namespace) -> int:
    """``hazyzoo eval recall``: plain prompts versus JRT-Prompt on a recall task."""
    import json

    if args.data is not None and args.task == "synthetic":
        raise ValueError("--data is for --task swde/fda/squad; the synthetic task is generated")
    if args.data is not None and not Path(args.data).exists():
        raise FileNotFoundError(f"--data {args.data} does not exist")
    for name in ("limit", "batch_size", "max_new_tokens", "num_docs", "facts_per_doc"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    output = Path(args.output) if args.output else None
    if output is not None:
        if output.is_dir():
            raise IsADirectoryError(f"--output {output} is a directory; give a .json file path")
        if output.exists() and not args.overwrite:
            raise FileExistsError(f"--output {output} exists (pass --overwrite to replace it)")
    # Loading the data first: a bad file fails before the (slow) model load.
    from hazyzoo.evaluation.recall import evaluate_recall, format_table, load_recall_task

    examples = load_recall_task(
        args.task,
        args.data,
        limit=args.limit,
        seed=args.seed,
        num_docs=args.num_docs,
        facts_per_doc=args.facts_per_doc,
    )
    model, tokenizer = _load_causal_lm(args.model, args.device)
    results = evaluate_recall(
        model,
        tokenizer,
        args.task,
        examples=examples,
        prompt=args.prompt,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        device=args.device,
        progress=True,
    )
    print(f"recall: task {args.task}, model {args.model}")
    print(format_table(results))
    if output is not None:
        settings = {k: v for k, v in vars(args).items() if k not in ("func", "overwrite")}
        payload = {"settings": settings, "results": {k: r.to_dict() for k, r in results.items()}}
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"wrote {output}")
    return 0


def _load_causal_lm(model_id: str, device: str | None) -> tuple:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import hazyzoo  # noqa: F401  (registers the zoo models with the Auto classes)

    try:
        model = AutoModelForCausalLM.from_pretrained(model_id)
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as err:
        raise OSError(f"--model {model_id}: cannot load a causal LM and tokenizer: {err}") from err
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``hazyzoo`` command."""
    parser = argparse.ArgumentParser(
        prog="hazyzoo", description="A Hugging Face-native zoo of efficient architectures."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="print the zoo table (architectures, status, support)")
    p.add_argument("--markdown", action="store_true", help="print the README's Markdown table")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser(
        "demo",
        help="based (default): MQAR, a tiny BASED vs a Llama baseline, save, reload; "
        "jrt: JRT-Prompt vs plain prompts, and JRT-RNN vs BASED vs Llama on MQAR orders; "
        "rtf: bidirectional RTF vs S4D classifiers on sequential 8x8 digits",
    )
    p.add_argument("which", nargs="?", choices=["based", "jrt", "rtf"], default="based")
    p.add_argument("--output-dir", default="demo_output", help="where data and models go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert", help="convert a released reference checkpoint")
    p.add_argument("architecture", choices=["based", "jrt", "m2bert", "mad", "rtf"])
    p.add_argument(
        "src",
        help="directory with the reference config.json and weights (m2bert: pytorch_model.bin "
        "or *.safetensors; rtf: a checkpoint file, "
        ".safetensors or a torch .pt/.pth/.bin/.ckpt, with reference RTF layers)",
    )
    p.add_argument("out", help="output directory for the hazyzoo checkpoint (new or empty)")
    p.add_argument("--base-model", default=None, help="Hub id of the source, for the card")
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="a tokenizer directory to save beside the weights (default: copy SRC's files)",
    )
    p.add_argument(
        "--remote-code",
        action="store_true",
        help="also write the modeling code and auto_map (loads with trust_remote_code=True)",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="write into a non-empty OUT, replacing files"
    )
    p.add_argument(
        "--head",
        choices=["text-encoding", "masked-lm"],
        default=None,
        help="m2bert: the head to convert to (default: text-encoding when the weights have a "
        "pooler, else masked-lm)",
    )
    g = p.add_argument_group(
        "rtf",
        "the reference RTF constructor's arguments, and where the rest of the model comes from",
    )
    g.add_argument(
        "--reference-config",
        metavar="ARGS.json",
        help="a JSON object of the constructor's arguments (d_model, state_size, trunc_len, "
        "num_a, bidirectional, init, constraint, dropout, class); flags given override it",
    )
    g.add_argument("--d-model", type=int, default=None)
    g.add_argument("--state-size", type=int, default=None)
    g.add_argument("--trunc-len", type=int, default=None)
    g.add_argument("--num-a", type=int, default=None, help="default: d_model")
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--init", default=None, help="zeros (default), xavier or montel")
    g.add_argument("--constraint", default=None, help="no (default) or l1_montel")
    g.add_argument("--rtf-class", default=None, help="RTF (default) or RTF2")
    g.add_argument(
        "--base",
        default=None,
        metavar="DIR",
        help="a hazyzoo RTF checkpoint to take every weight but the filters from (and its "
        "head, width, depth and tokenizer)",
    )
    g.add_argument(
        "--filters-only",
        action="store_true",
        help="initialise every weight but the filters freshly (not a trained model)",
    )
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("card", help="write a model card README.md into a checkpoint directory")
    p.add_argument("model_dir")
    p.add_argument("--repo-id", default=None, help="Hub repo the card will live in")
    p.add_argument("--base-model", default=None, help="Hub id of the model this derives from")
    p.add_argument("--tag", action="append", help="extra tag (repeatable)")
    p.add_argument("--license", default=None, help="license id (default: the architecture's)")
    p.add_argument("--dataset", action="append", help="Hub id of a training data set (repeatable)")
    p.add_argument("--language", action="append", help="language code (repeatable)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a README.md hazyzoo did not write"
    )
    p.set_defaults(func=_cmd_card)

    p = sub.add_parser(
        "train",
        help="fine-tune a zoo LM or any causal LM with transformers.Trainer (also under "
        "accelerate launch; --lora for a peft adapter)",
        description="Fine-tune with transformers.Trainer; see hazyzoo.train's docstring.",
    )
    from hazyzoo.train import add_arguments as add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "eval", help="run an evaluation (recall: plain prompts vs JRT-Prompt; locov1: retrieval)"
    )
    eval_sub = p.add_subparsers(dest="evaluation", required=True)
    p = eval_sub.add_parser(
        "recall", help="recall tasks (synthetic, SWDE, FDA, SQuAD): plain vs JRT-Prompt"
    )
    p.add_argument("--model", required=True, metavar="PATH_OR_ID", help="a causal LM + tokenizer")
    p.add_argument("--task", choices=["synthetic", "swde", "fda", "squad"], default="synthetic")
    p.add_argument(
        "--data", default=None, metavar="PATH", help="local .json/.jsonl/.parquet in the Hub schema"
    )
    p.add_argument("--prompt", choices=["plain", "jrt", "both"], default="both")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N examples")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--device", default=None, help="e.g. cpu, cuda (default: where it loads)")
    p.add_argument("--output", default=None, metavar="FILE.json", help="write the results here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic task")
    p.add_argument("--num-docs", type=int, default=100, help="synthetic: number of documents")
    p.add_argument("--facts-per-doc", type=int, default=8, help="synthetic: facts per document")
    p.set_defaults(func=_cmd_eval)
    p = eval_sub.add_parser(
        "locov1", help="LoCoV1 long-context retrieval: nDCG@10 per task and the average"
    )
    _add_locov1_arguments(p)
    p.set_defaults(func=_cmd_eval_locov1)
    p = eval_sub.add_parser(
        "mad", help="MAD synthetic tasks: train architectures, accuracy per task, MAD scores"
    )
    _add_mad_arguments(p)
    p.set_defaults(func=_cmd_eval_mad)
    p = eval_sub.add_parser(
        "vq", help="VQ-VAE: straight-through vs the rotation trick (MSE, usage, perplexity)"
    )
    from hazyzoo.evaluation.vq import add_arguments as add_vq_arguments

    add_vq_arguments(p)
    p.set_defaults(func=_cmd_eval_vq)
    p = eval_sub.add_parser(
        "prospector", help="Prospector heads: localisation AUPRC / AP / AUROC on planted motifs"
    )
    from hazyzoo.evaluation.prospector import add_arguments as add_prospector_arguments

    add_prospector_arguments(p)
    p.set_defaults(func=_cmd_eval_prospector)
    p = eval_sub.add_parser(
        "gpt4all", help="the GPT4All task list (or any lm-eval tasks) through lm-eval's Python API"
    )
    from hazyzoo.evaluation.gpt4all import add_arguments as add_gpt4all_arguments

    add_gpt4all_arguments(p)
    p.set_defaults(func=_cmd_eval_gpt4all)
    p = eval_sub.add_parser(
        "cookbook",
        help="Cookbook: a tiny LM fine-tuned on one template, held-out rule following before and "
        "after (--mix: template mixing)",
    )
    from hazyzoo.evaluation.cookbook import add_arguments as add_cookbook_arguments

    add_cookbook_arguments(p)
    p.set_defaults(func=_cmd_eval_cookbook)
    p = eval_sub.add_parser(
        "coverage",
        help="repeated sampling (Large Language Monkeys): sample, verify, coverage / pass@k, "
        "power-law fit, majority vote and reward selection",
    )
    from hazyzoo.evaluation.coverage import add_arguments as add_coverage_arguments

    add_coverage_arguments(p)
    p.set_defaults(func=_cmd_eval_coverage)
    return parser


def _add_locov1_arguments(parser: argparse.ArgumentParser) -> None:
    from hazyzoo.evaluation.locov1 import add_arguments

    add_arguments(parser)


def _cmd_eval_locov1(args: argparse.Namespace) -> int:
    """``hazyzoo eval locov1``: dense retrieval with a text encoder, nDCG@10 per task."""
    from hazyzoo.evaluation.locov1 import run_from_args

    return run_from_args(args)


def _add_mad_arguments(parser: argparse.ArgumentParser) -> None:
    from hazyzoo.evaluation.mad import add_arguments

    add_arguments(parser)


def _cmd_eval_mad(args: argparse.Namespace) -> int:
    """``hazyzoo eval mad``: the MAD protocol (reduced by default, the paper's with --full)."""
    from hazyzoo.evaluation.mad import run_from_args

    return run_from_args(args)


def _cmd_eval_vq(args: argparse.Namespace) -> int:
    """``hazyzoo eval vq``: VQ-VAEs with each gradient estimator, trained and compared."""
    from hazyzoo.evaluation.vq import run_from_args

    return run_from_args(args)


def _cmd_eval_prospector(args: argparse.Namespace) -> int:
    """``hazyzoo eval prospector``: prospector heads fitted on planted motifs, maps scored."""
    from hazyzoo.evaluation.prospector import run_from_args

    return run_from_args(args)


def _cmd_eval_coverage(args: argparse.Namespace) -> int:
    """``hazyzoo eval coverage``: repeated sampling, verification and coverage analysis."""
    from hazyzoo.evaluation.coverage import run_from_args

    return run_from_args(args)


def _cmd_eval_cookbook(args: argparse.Namespace) -> int:
    """``hazyzoo eval cookbook``: rule following after fine-tuning on a template, or mixing."""
    from hazyzoo.evaluation.cookbook import run_from_args

    return run_from_args(args)


def _cmd_eval_gpt4all(args: argparse.Namespace) -> int:
    """``hazyzoo eval gpt4all``: lm-eval's GPT4All tasks (or --tasks) on a causal LM."""
    from hazyzoo.evaluation.gpt4all import run_from_args

    return run_from_args(args)


def _one_line(err: BaseException, command: str) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, ModuleNotFoundError) and command in _EXTRAS:
        text += f" (install it with: pip install 'hazyzoo[{_EXTRAS[command]}]')"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hazyzoo`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _INPUT_ERRORS as err:
        print(f"hazyzoo {args.command}: error: {_one_line(err, args.command)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
