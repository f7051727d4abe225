"""The commands of `langneurons` and the tasks of `langneurons evaluate`, in the order `--help` lists them.

To add a command (a task): write its module, `langneurons.cli.NAME` (`langneurons.cli.evaluate.NAME`), with
`add_arguments(parser)`, `main(args)` and a docstring that opens its `--help` (a task's opens with the docstring
of its `work` module in `langneurons.tasks`), and list it here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: its module `cli`, imported only when the command is run or asked for `--help`; `summary`, its
    line in the parent's list; `work`, the module whose docstring opens its `--help` instead of the docstring of
    `cli` (read from the source: importing it could import torch); `tasks`, its own subcommands."""

    name: str
    cli: str
    summary: str
    work: str | None = None
    tasks: tuple[Command, ...] = ()


TASKS = (
    Command("forcing", "langneurons.cli.evaluate.forcing", work="langneurons.tasks.forcing",
            summary="source x target grid: is the steered answer in the target language (and fluent)?"),
    Command("fallback", "langneurons.cli.evaluate.fallback", work="langneurons.tasks.fallback",
            summary="deactivate languages one after another: which language does the model fall back to?"),
    Command("translation", "langneurons.cli.evaluate.translation", work="langneurons.tasks.translation",
            summary="translate source -> target (UDHR, FLORES+ or files): chrF and BLEU, unsteered vs target "
                    "activated"),
    Command("lm-eval", "langneurons.cli.evaluate.lm_eval", work="langneurons.tasks.harness",
            summary="any lm-evaluation-harness task (belebele_*, xnli_*, xquad_*, xcopa_*, ...): baseline vs steered"),
    Command("perplexity", "langneurons.cli.evaluate.perplexity", work="langneurons.tasks.perplexity",
            summary="deactivate each language's neurons: next-token loss on every language's held-out text (+ random "
                    "control)"),
    Command("logit-lens", "langneurons.cli.evaluate.logit_lens", work="langneurons.tasks.logit_lens",
            summary="logit lens: per layer, the script of the top-k next-token candidates and the entropy"),
)

COMMANDS = (
    Command("collect", "langneurons.cli.collect", "collect per-neuron activation statistics per language"),
    Command("identify", "langneurons.cli.identify", "find language neurons from statistics"),
    Command("merge", "langneurons.cli.merge", "merge statistics (or relevance) files (shards, machines, runs)"),
    Command("info", "langneurons.cli.info", "summarise a statistics or neuron file"),
    Command("languages", "langneurons.cli.languages", "list the languages of the embedded UDHR corpus"),
    Command("finetune", "langneurons.cli.finetune",
            "train only one language's neurons on its text; save the changed slices"),
    Command("apply-delta", "langneurons.cli.apply_delta",
            "write a fine-tuned model folder: base model + `finetune` slices"),
    Command("generate", "langneurons.cli.generate", "baseline and steered outputs side by side"),
    Command("calibrate", "langneurons.cli.calibrate", "choose the steering setting per target language on dev prompts"),
    Command("export", "langneurons.cli.export", "write a steering setting in another tool's format (lm-eval-steer)"),
    Command("evaluate", "langneurons.cli.evaluate", "evaluation tasks (--list shows them)", tasks=TASKS),
    Command("compare", "langneurons.cli.compare",
            "compare neuron sets of equal size by masking (LAPE, CRANE, frequency, random)"),
    Command("plot", "langneurons.cli.plot", "analysis figures of a neuron set (and its statistics)"),
    Command("report", "langneurons.cli.report", "one self-contained HTML page (and Markdown) of a run directory"),
    Command("demo", "langneurons.cli.demo", "the main job on the embedded default: statistics to report"),
)
