"""Apply a delta from `finetune` to its base model and save the result as a model folder that every command takes as
--model."""

from __future__ import annotations

import argparse
from pathlib import Path

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons apply-delta`."""
    options.add_model_options(p)
    p.add_argument("delta", help="delta file from `finetune`")
    p.add_argument("--force", action="store_true", help="apply even if the model id or revision differs")
    p.add_argument("-o", "--output", required=True, help="new model folder (must not exist)")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons apply-delta`."""
    import shutil
    import tempfile

    from langneurons.core.artifacts import write_json
    from langneurons.tasks.finetune import apply_finetune

    out = Path(args.output)
    if out.exists():
        raise LangNeuronsError(f"{out} exists; remove it or choose another --output")
    check_output(out, [args.delta, args.model], folder=True)
    model, tok = options.load_model_from_args(args)
    delta = apply_finetune(model, args.delta, check_id=not args.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "langneurons_finetune.json", {"delta": str(args.delta), **delta.meta})
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"applied {delta.n_parameters} parameters ({delta.meta['language']} neurons); wrote {out}")
