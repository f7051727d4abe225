"""Which model an artifact was made on, and the one check that an artifact fits the model it is used with.

Artifacts record `{"id", "revision", "type", "config_sha256", "content_sha256"}` under `meta["model"]` (the
content hash of the loaded file or folder; None for hub models, named by id and revision); every field both sides
record is compared.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from langneurons.core.errors import LangNeuronsError

# config fields that say how the model was loaded or run, not what it is
_VOLATILE = {"_name_or_path", "transformers_version", "torch_dtype", "dtype", "_commit_hash", "_attn_implementation",
             "_attn_implementation_autoset", "_attn_implementation_internal", "use_cache", "return_dict",
             "output_hidden_states", "output_attentions", "torchscript", "quantization_config", "architectures"}
COMPARED = ("id", "type", "config_sha256", "revision")  # and any other field both sides record
UNNAMED = "unnamed-"  # the id prefix `models.model_id` gives a model built in memory


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in _VOLATILE}
    if isinstance(value, list | tuple):
        return [_stable(v) for v in value]
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def config_fingerprint(config: Any) -> str:
    """sha256 (first 16 hex digits) of a model config without its loading-time fields."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    text = json.dumps(_stable(data), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def model_meta(model: Any) -> dict[str, Any]:
    """What artifacts record about the model they were made on."""
    from langneurons.core.models import model_id, model_revision

    config = getattr(model, "config", None)
    return {"id": model_id(model), "revision": model_revision(model), "type": getattr(config, "model_type", None),
            "config_sha256": config_fingerprint(config) if config is not None else None,
            "content_sha256": getattr(model, "langneurons_content", None)}


def check_same_model(recorded: Any, current: dict[str, Any], what: str, allow_other: bool = False) -> None:
    """Fail unless the artifact `what`, made on `recorded` (its `meta["model"]`), was made on the `current` model.

    Every field both record (id, type, config fingerprint, revision, file hashes) must agree. `allow_other` permits a
    deliberate transfer (base -> chat) once the shapes fit; artifacts that record no model pass.
    """
    if allow_other or not isinstance(recorded, dict):
        return
    keys = [*COMPARED, *sorted(set(recorded) & set(current) - set(COMPARED))]
    if any(str(side.get("id")).startswith(UNNAMED) for side in (recorded, current)):
        keys.remove("id")  # a model built in memory has no id to compare; its type and fingerprint still count
    differ = [k for k in keys if recorded.get(k) is not None and current.get(k) is not None
              and recorded[k] != current[k]]
    if differ:
        diffs = ", ".join(f"{k} {recorded[k]!r} vs {current[k]!r}" for k in differ)
        raise LangNeuronsError(f"{what} was made on another model ({diffs}); use artifacts made on this model, "
                               "or pass --allow-other-model for a deliberate transfer (e.g. base -> chat)")
