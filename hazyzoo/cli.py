"""The ``hazyzoo`` command: list, demo, convert, card."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _cmd_list(args: argparse.Namespace) -> int:
    from hazyzoo.zoo import zoo_markdown, zoo_text

    print(zoo_markdown() if args.markdown else zoo_text())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hazyzoo.demo import run_demo

    run_demo(args.output_dir, seed=args.seed, quick=args.quick)
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    converters = {"based": _convert_based}
    return converters[args.architecture](args)


def _convert_based(args: argparse.Namespace) -> int:
    from hazyzoo.conversion.based import convert_based
    from hazyzoo.hub import write_model_card

    model = convert_based(args.src, args.out)
    write_model_card(args.out, base_model=args.base_model, overwrite=True)
    n = sum(p.numel() for p in model.parameters())
    print(
        f"converted {args.src} -> {args.out} ({n:,} parameters, model_type {model.config.model_type})"
    )
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from hazyzoo.hub import write_model_card

    path = write_model_card(
        args.model_dir, repo_id=args.repo_id, base_model=args.base_model, tags=args.tag or None
    )
    print(f"wrote {path}")
    return 0


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
        "demo", help="MQAR: train a tiny BASED and a Llama baseline, compare, save, reload"
    )
    p.add_argument("--output-dir", default="demo_output", help="where data and models go")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a much shorter run (smoke test)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("convert", help="convert a released reference checkpoint")
    p.add_argument("architecture", choices=["based"])
    p.add_argument("src", help="directory with the reference config.json and weights")
    p.add_argument("out", help="output directory for the hazyzoo checkpoint")
    p.add_argument("--base-model", default=None, help="Hub id of the source, for the card")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("card", help="write a model card README.md into a checkpoint directory")
    p.add_argument("model_dir")
    p.add_argument("--repo-id", default=None, help="Hub repo the card will live in")
    p.add_argument("--base-model", default=None, help="Hub id of the model this derives from")
    p.add_argument("--tag", action="append", help="extra tag (repeatable)")
    p.set_defaults(func=_cmd_card)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hazyzoo`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"hazyzoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
