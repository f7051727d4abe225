"""load_model: local folders, dtypes, errors, hub ids from a local hub cache, the embedded model's cache."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import transformers.utils.hub
from tiny import make_tiny, tiny_tokenizer
from transformers import BertConfig, BertLMHeadModel, T5Config

from langneurons.core import models
from langneurons.core.cache import cache_dir
from langneurons.core.errors import LangNeuronsError
from langneurons.core.models import EmbeddedModel, load_model, model_id, model_revision
from langneurons.core.provenance import config_fingerprint, model_meta
from langneurons.core.sites import find_sites

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _save_tiny(folder: Path, model_type: str = "llama"):
    model = make_tiny(model_type)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return model


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits.float()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "llama"
    _save_tiny(folder)
    return folder


# --- local folders ------------------------------------------------------------------------------------------


def test_folder_roundtrip_identical_logits(tmp_path: Path) -> None:
    original = _save_tiny(tmp_path / "m")
    model, tokenizer = load_model(tmp_path / "m")
    ids = tokenizer("Le chat dort.").input_ids
    assert ids == tiny_tokenizer()("Le chat dort.").input_ids
    assert torch.equal(_logits(model, ids), _logits(original, ids))
    assert not model.training
    assert model.dtype == torch.float32
    assert model.device.type == "cpu"
    assert model_id(model) == str((tmp_path / "m").resolve())
    assert model_revision(model) is None


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (None, torch.float32),
        ("float32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        ("auto", torch.float32),  # the dtype saved in the folder's config
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_dtype(tiny_folder: Path, dtype, expected: torch.dtype) -> None:
    model, _ = load_model(str(tiny_folder), dtype=dtype)
    assert model.dtype == expected


def test_bad_dtype(tiny_folder: Path) -> None:
    with pytest.raises(LangNeuronsError, match="unknown dtype 'float8'"):
        load_model(tiny_folder, dtype="float8")


@pytest.mark.parametrize("name", ["./no/such/folder", "/no/such/folder", "missing.gguf", "a/b/c"])
def test_missing_path(name: str) -> None:
    with pytest.raises(LangNeuronsError, match="no such model folder or file"):
        load_model(name)


def test_missing_path_object(tmp_path: Path) -> None:
    with pytest.raises(LangNeuronsError, match="no such model folder or file"):
        load_model(tmp_path / "nothing")


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    with pytest.raises(LangNeuronsError, match=r"not a \.gguf file"):
        load_model(tmp_path / "weights.bin")


def test_damaged_gguf(tmp_path: Path) -> None:
    (tmp_path / "broken.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(LangNeuronsError, match=r"broken\.gguf"):
        load_model(tmp_path / "broken.gguf")


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(LangNeuronsError, match=r"no config.json.*pass a Hugging Face model folder"):
        load_model(tmp_path)


def test_unsupported_architecture_bert(tmp_path: Path) -> None:
    """A causal LM whose family has no neuron site fails at load with the registry's clear error."""
    config = BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, is_decoder=True)
    BertLMHeadModel(config).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(LangNeuronsError, match="model type 'bert' has no known neuron site"):
        load_model(tmp_path)


def test_unsupported_architecture_t5(tmp_path: Path) -> None:
    """transformers cannot make a causal LM of T5 at all: still one clear LangNeuronsError."""
    T5Config(vocab_size=300, d_model=32, d_ff=48, num_layers=2, num_heads=4).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(LangNeuronsError, match="cannot load the model folder") as info:
        load_model(tmp_path)
    assert "\n" not in str(info.value)


def test_revision_only_for_hub(tiny_folder: Path) -> None:
    with pytest.raises(LangNeuronsError, match="applies only to hub ids"):
        load_model(tiny_folder, revision="main")


def test_device_and_device_map_exclusive(tiny_folder: Path) -> None:
    with pytest.raises(LangNeuronsError, match="either device or device_map"):
        load_model(tiny_folder, device="cpu", device_map="cpu")


def test_device_map_passed_through(tiny_folder: Path) -> None:
    model, _ = load_model(tiny_folder, device_map="cpu")
    assert model.device.type == "cpu"


def test_model_id_of_a_plain_transformers_model() -> None:
    model = make_tiny("llama")
    model.config._name_or_path = "org/some-model"
    assert model_id(model) == "org/some-model"
    assert model_revision(model) is None
    model.config._name_or_path = ""
    assert model_id(model) == "unnamed-llama"  # built in memory: a placeholder, never an error


# --- hub ids (offline: a hand-made hub cache) ---------------------------------------------------------------


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty hub cache with the hub switched to offline mode."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    # transformers 4 copies both at import
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", True, raising=False)
    monkeypatch.setattr(transformers.utils.hub, "TRANSFORMERS_CACHE", str(hub), raising=False)
    return hub


def test_hub_id_unreachable(offline_hub: Path) -> None:
    with pytest.raises(LangNeuronsError, match=r"cannot load 'org/absent': not a local folder") as info:
        load_model("org/absent")
    assert "\n" not in str(info.value)


def test_hub_id_from_cache_records_commit(offline_hub: Path) -> None:
    repo = offline_hub / "models--org--tiny"
    original = _save_tiny(repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    model, tokenizer = load_model("org/tiny")
    assert model_id(model) == "org/tiny"
    assert model_revision(model) == COMMIT
    ids = tokenizer("Der Hund schläft.").input_ids
    assert torch.equal(_logits(model, ids), _logits(original, ids))


# --- the embedded model's conversion and cache (a fake package and converter: fast) -------------------------

FAKE_MODULE = "langneurons_test_fake_gguf"


@pytest.fixture
def fake_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """An embedded alias "tiny-test" backed by a fake package whose "GGUF" is converted to a tiny llama."""
    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    package = types.ModuleType(FAKE_MODULE)
    package.EXPECTED_SHA256 = "ab" * 32

    def assemble(output_path: Path) -> Path:
        Path(output_path).write_bytes(b"GGUF fake")
        return Path(output_path)

    package.assemble = assemble
    monkeypatch.setitem(sys.modules, FAKE_MODULE, package)
    spec = EmbeddedModel(package="langneurons", module=FAKE_MODULE, source="org/tiny", quant="Q8_0")
    monkeypatch.setitem(models.EMBEDDED, "tiny-test", spec)
    state = types.SimpleNamespace(package=package, conversions=0, during=None)

    def fake_load_gguf(path: Path, kwargs: dict):
        assert path.read_bytes() == b"GGUF fake" and kwargs["dtype"] == torch.float32
        state.conversions += 1
        if state.during is not None:
            state.during()
        return make_tiny("llama"), tiny_tokenizer()

    monkeypatch.setattr(models, "_load_gguf", fake_load_gguf)
    return state


def _models_dir() -> Path:
    return cache_dir("models")


def _leftovers() -> list[Path]:
    return [p for p in _models_dir().rglob("*") if p.suffix in (".gguf", ".tmp")]


def test_embedded_converts_once(fake_embedded: types.SimpleNamespace) -> None:
    model, _ = load_model("tiny-test")
    folder = _models_dir() / "tiny-test"
    marker = json.loads((folder / models.MARKER).read_text())
    assert marker["source_sha256"] == "ab" * 32 and marker["source"] == "org/tiny"
    assert model_id(model) == "org/tiny"
    assert model_revision(model) == "gguf:Q8_0:" + "ab" * 6
    assert _leftovers() == []
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()}
    assert "model.safetensors" in modes and set(modes.values()) == {0o666 & ~umask}, modes  # not private (0600)
    load_model("tiny-test")
    assert fake_embedded.conversions == 1


def test_embedded_needs_package(
    fake_embedded: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, FAKE_MODULE, None)  # makes the import fail
    with pytest.raises(LangNeuronsError, match=r"pip install 'langneurons\[demo\]'"):
        load_model("tiny-test")


def test_embedded_damaged_package(fake_embedded: types.SimpleNamespace) -> None:
    def assemble(output_path: Path) -> Path:
        raise ValueError("Assembled file sha256 did not match expected value")

    fake_embedded.package.assemble = assemble
    with pytest.raises(LangNeuronsError, match=r"cannot assemble the GGUF of 'tiny-test'.*reinstall"):
        load_model("tiny-test")
    assert _leftovers() == [] and not (_models_dir() / "tiny-test").exists()


def test_embedded_cache_works_without_package(
    fake_embedded: types.SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_model("tiny-test")
    monkeypatch.setitem(sys.modules, FAKE_MODULE, None)
    model, _ = load_model("tiny-test")
    assert model_id(model) == "org/tiny" and fake_embedded.conversions == 1


def test_embedded_reconverts_when_package_changes(fake_embedded: types.SimpleNamespace) -> None:
    load_model("tiny-test")
    fake_embedded.package.EXPECTED_SHA256 = "cd" * 32
    model, _ = load_model("tiny-test")
    assert fake_embedded.conversions == 2
    assert model_revision(model) == "gguf:Q8_0:" + "cd" * 6
    assert _leftovers() == []


def test_embedded_replaces_partial_folder(fake_embedded: types.SimpleNamespace) -> None:
    folder = _models_dir() / "tiny-test"
    folder.mkdir()
    (folder / "config.json").write_text("{}")  # an interrupted copy: no marker
    load_model("tiny-test")
    assert (folder / models.MARKER).is_file() and fake_embedded.conversions == 1
    assert _leftovers() == []


def test_embedded_concurrent_conversion_keeps_the_first(
    fake_embedded: types.SimpleNamespace, tmp_path: Path
) -> None:
    """When another process installs a complete folder while we convert, ours is discarded, theirs is kept."""
    theirs = tmp_path / "theirs"
    _save_tiny(theirs)
    (theirs / models.MARKER).write_text(json.dumps({"source_sha256": "ab" * 32, "other": True}))
    target = _models_dir() / "tiny-test"
    fake_embedded.during = lambda: shutil.copytree(theirs, target)
    load_model("tiny-test")
    assert json.loads((target / models.MARKER).read_text()).get("other") is True
    assert _leftovers() == []


def test_unknown_embedded_name() -> None:
    with pytest.raises(LangNeuronsError, match="unknown embedded model"):
        models.embedded_model_dir("gemma-9")


# --- the real embedded model (integration) ------------------------------------------------------------------


def test_gemma_architecture(gemma) -> None:
    model, _ = gemma
    assert model.config.model_type == "gemma3_text"
    sites = find_sites(model)
    assert sites.shape == (18, 2048) and sites.spec.gated
    assert model.dtype == torch.float32 and not model.training
    assert model_id(model) == "google/gemma-3-270m"
    sha = sys.modules[models.EMBEDDED["gemma-3-270m"].module].EXPECTED_SHA256
    assert model_revision(model) == f"gguf:Q4_K_M:{sha[:12]}"


def test_gemma_tokenizer(gemma) -> None:
    _, tokenizer = gemma
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (2, 1)
    assert tokenizer("Hello world").input_ids[0] == tokenizer.bos_token_id


def _greedy(model, tokenizer, prompt: str, n: int) -> str:
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=n, do_sample=False)
    return tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)


def test_gemma_generates_english(gemma) -> None:
    """Greedy continuations are fluent English (this base model says "the capital of the country of France"
    to the bare prompt, and "Paris" once the prompt asks for a city)."""
    model, tokenizer = gemma
    plain = _greedy(model, tokenizer, "The capital of France is", 8)
    assert plain.isascii() and len(plain.split()) >= 4 and "France" in plain
    assert "Paris" in _greedy(model, tokenizer, "The capital of France is the city of", 3)


def test_gemma_reload_uses_cache(gemma) -> None:
    model, tokenizer = gemma
    again, _ = load_model("gemma-3-270m")
    folder = _models_dir() / "gemma-3-270m"
    assert (folder / models.MARKER).is_file()
    assert list(_models_dir().rglob("*.gguf")) == []
    ids = tokenizer("Bonjour le monde").input_ids
    assert torch.equal(_logits(again, ids), _logits(model, ids))


# --- a user's .gguf: converted once, keyed by content; fingerprints ------------------------------------------


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A "GGUF" file whose conversion (counted) yields a tiny llama; the cache lives in tmp_path."""
    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    state = types.SimpleNamespace(conversions=0, path=tmp_path / "m.gguf")
    state.path.write_bytes(b"GGUF one")

    def fake_load_gguf(path: Path, kwargs: dict):
        state.conversions += 1
        return make_tiny("llama", seed=len(path.read_bytes())), tiny_tokenizer()

    monkeypatch.setattr(models, "_load_gguf", fake_load_gguf)
    return state


def test_gguf_converted_once_and_keyed_by_content(fake_gguf: types.SimpleNamespace, tmp_path: Path) -> None:
    import hashlib

    model, _ = load_model(fake_gguf.path)
    sha = hashlib.sha256(b"GGUF one").hexdigest()
    assert (cache_dir("models") / f"gguf-{sha[:16]}" / models.MARKER).is_file()
    assert model_id(model) == str(fake_gguf.path.resolve()) and model_revision(model) == f"gguf:{sha[:12]}"
    again, _ = load_model(fake_gguf.path)
    assert fake_gguf.conversions == 1 and torch.equal(_logits(model, [1, 5, 9]), _logits(again, [1, 5, 9]))
    copy = tmp_path / "elsewhere.gguf"  # the same bytes under another name: the same cached folder
    shutil.copy(fake_gguf.path, copy)
    load_model(copy)
    assert fake_gguf.conversions == 1
    fake_gguf.path.write_bytes(b"GGUF two, changed")  # new content at the same path: converted again
    changed, _ = load_model(fake_gguf.path)
    assert fake_gguf.conversions == 2
    assert model_meta(changed)["content_sha256"] == hashlib.sha256(b"GGUF two, changed").hexdigest()
    assert model_meta(changed)["content_sha256"] != model_meta(model)["content_sha256"]


def test_content_hash_is_remembered_by_path_size_and_mtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"x" * 3_000_000)
    assert models.content_sha256(f) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    opened = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k))
    models.content_sha256(f)
    assert f not in opened  # answered from the remembered record
    f.write_bytes(b"y" * 3_000_000)  # same size; the mtime changes
    assert models.content_sha256(f) == hashlib.sha256(b"y" * 3_000_000).hexdigest()


def test_folder_fingerprint(tiny_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setenv("LANGNEURONS_CACHE", str(tmp_path / "cache"))
    model, _ = load_model(tiny_folder)
    fp = model_meta(model)
    files = sorted(p for p in tiny_folder.rglob("*") if p.is_file())
    by_hand = hashlib.sha256("".join(
        f"{p.relative_to(tiny_folder).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n" for p in files
    ).encode()).hexdigest()
    assert fp["content_sha256"] == by_hand and fp["type"] == "llama" and fp["id"] == model_id(model)
    assert len(fp["config_sha256"]) == 16
    # the config hash ignores how the model was loaded (dtype), not what it is (its shape)
    in_bf16 = load_model(tiny_folder, dtype="bfloat16")[0]
    assert model_meta(in_bf16)["config_sha256"] == fp["config_sha256"]
    other = make_tiny("llama")
    other.config.intermediate_size += 1
    assert config_fingerprint(other.config) != fp["config_sha256"]


def test_set_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from langneurons.cli.options import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert set_threads(None) == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert 1 <= set_threads(None) <= 8
        with pytest.raises(LangNeuronsError, match="--threads 0"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
