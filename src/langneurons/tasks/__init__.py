"""Evaluation tasks: each module's `run_*` function runs one task on a loaded model and returns a result that saves
itself (a JSON summary of kind `results` plus per-sample JSONL that a rerun continues, via `tasks.results`).
`langneurons evaluate TASK` reaches them through `langneurons.cli.evaluate`."""
