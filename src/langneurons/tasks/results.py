"""Task results: run metadata, a JSON summary written atomically, and per-sample JSONL that a rerun continues."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from langneurons.core.artifacts import read_json, write_json
from langneurons.core.errors import LangNeuronsError

RESULTS_KIND = "results"
FORCING_KIND = "forcing"
FALLBACK_KIND = "fallback"
DEMO_KIND = "demo summary"


def run_metadata(model: Any, task: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """What every result records: task, settings, the model's id and revision, library versions, date."""
    import torch
    import transformers

    from langneurons.core.models import model_placement
    from langneurons.core.provenance import model_meta
    from langneurons.core.version import __version__

    return {
        "task": task,
        "settings": dict(settings),
        "model": {**model_meta(model), **model_placement(model)},
        "versions": {"langneurons": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_results(path: str | Path, meta: Mapping[str, Any], summary: Mapping[str, Any]) -> Path:
    """Write `{"kind": "results", **meta, "summary": summary}` atomically; returns the path."""
    return write_kind(path, RESULTS_KIND, {**meta, "summary": dict(summary)})


def write_kind(path: str | Path, kind: str, data: Mapping[str, Any]) -> Path:
    """Write `{"kind": kind, **data}` atomically: every JSON summary a run writes names its kind, by which the
    report reads it. Under torchrun only rank 0 writes. Returns the path."""
    from langneurons.core.distributed import is_main

    if is_main():
        write_json(path, {"kind": kind, **{k: v for k, v in data.items() if k != "kind"}})
    return Path(path)


def read_results(path: str | Path) -> dict[str, Any]:
    """A results JSON written by `write_results`."""
    return read_json(path, RESULTS_KIND, "run `langneurons evaluate TASK` first")


def fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of settings (JSON, sorted keys): samples written under other settings are not reused."""
    text = json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class SampleLog:
    """Per-sample rows in a JSONL file, appended as they are made, so a rerun skips the rows already there.

    Rows are identified by the values of `key_fields`. The file's settings fingerprint sits in a sidecar
    `<file>.settings`; a rerun under other settings is refused (or starts over with `fresh=True`). A partial last
    line (an interrupted write) is dropped.
    """

    def __init__(self, path: str | Path, key_fields: Sequence[str], settings: Mapping[str, Any],
                 fresh: bool = False):
        from langneurons.core.distributed import barrier, is_main

        self.path, self.key_fields = Path(path), tuple(key_fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        stamp = self.path.with_name(self.path.name + ".settings")
        digest = fingerprint(settings)
        self.rows: dict[Hashable, dict[str, Any]] = {}
        start = fresh or not self.path.exists()
        barrier()  # under torchrun every rank has checked the file before rank 0 changes it
        if start:
            if is_main():
                self.path.write_text("", "utf-8")
                stamp.write_text(digest + "\n", "utf-8")
            barrier()
            return
        if not stamp.exists() or stamp.read_text("utf-8").strip() != digest:
            raise LangNeuronsError(f"{self.path} was written with other settings; use another output folder, "
                                   "or --fresh to start over")
        lines = self.path.read_text("utf-8").split("\n")
        complete = lines[:-1]  # the text after the last newline is empty or an interrupted row
        barrier()  # every rank has read the file
        if lines[-1] and is_main():
            self.path.write_text("".join(line + "\n" for line in complete), "utf-8")
        for line in complete:
            row = json.loads(line)
            self.rows[self.key(row)] = row

    def key(self, row: Mapping[str, Any]) -> Hashable:
        """The identity of a row: its values of the key fields."""
        return tuple(json.dumps(row[k], sort_keys=True, ensure_ascii=False) for k in self.key_fields)

    def __contains__(self, row: Mapping[str, Any]) -> bool:
        return self.key(row) in self.rows

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows.values())

    def __getitem__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """The stored row with the same key as `row` (KeyError if there is none)."""
        return self.rows[self.key(row)]

    def add(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows (and flush), replacing none: rows already present are skipped."""
        from langneurons.core.distributed import is_main

        new = [r for r in rows if self.key(r) not in self.rows]
        for r in new:
            self.rows[self.key(r)] = r
        if is_main():  # under torchrun every rank holds the rows; rank 0 writes them
            with self.path.open("a", encoding="utf-8") as f:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
