"""Model resolution: where every role's weights come from, decided in one place.

`models.<role>.name_or_path` (and a `vllm` teacher's `model`) is one of
- `tiny`: a locally built tiny model (`tiny.ensure_model`, keyed by the recipe);
- a directory with a `config.json`: used as is;
- a hub id `ORG/NAME`: `huggingface_hub.snapshot_download` into `models.hub_cache` (default the
  standard Hugging Face cache), at `revision` when one is given, once per process (the hub's own
  progress bar shows the download). With `HF_HUB_OFFLINE=1` it resolves from that cache only.

`resolve_recipe_models(recipe)` runs before Ray or any actor starts, so a missing model ends the
run with one line naming the role, the model, the revision and the cache.

`lay_tiny_model(repo_id)` writes a tiny model into the hub cache in the hub's own layout
(`models--ORG--NAME/snapshots/<commit>/`, `refs/main`), with a ChatML-style chat template, so the
real path (hub ids, offline cache, chat templates) runs anywhere without a network.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rprm_ray.config import Recipe, TinyModelConfig


class ModelResolutionError(RuntimeError):
    """A model that cannot be found or fetched; the message names role, model, revision, cache."""


# A ChatML-style template (the format of Qwen2.5 instruct models): what `lay_tiny_model` gives its
# tokenizer, so the chat path (chat templates, /v1/chat/completions) is exercised by tiny models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_resolved: dict[tuple[str, str | None, str], Path] = {}


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~")) and " " not in text


def hub_cache_dir(cache: str | Path | None = None) -> Path:
    """The hub cache a recipe's `models.hub_cache` names, else Hugging Face's (HF_HOME/hub)."""
    if cache is not None:
        return Path(cache).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_model(name_or_path: str, *, revision: str | None = None, cache: str | Path | None = None,
                  where: str = "model") -> Path:
    """The local directory of a model directory or hub id (downloaded once when needed).
    Raises ModelResolutionError naming `where`, the model, the revision and the cache."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(f"{where}: {name_or_path} is a directory without config.json (not a model)")
        return path.resolve()
    if not looks_like_hub_id(name_or_path):
        raise ModelResolutionError(f"{where}: {name_or_path}: no such model directory, and not a hub id (ORG/NAME)")
    cache_dir = hub_cache_dir(cache)
    key = (name_or_path, revision, str(cache_dir))
    if key in _resolved:
        return _resolved[key]
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(repo_id=name_or_path, revision=revision, cache_dir=cache_dir))
    except Exception as exc:  # offline miss, unknown or gated repo, network: all end the same way
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        mode = "offline (HF_HUB_OFFLINE=1), and it is not in the cache" if _offline() else "download failed"
        raise ModelResolutionError(
            f"{where}: {name_or_path} (revision {revision or 'main'}, cache {cache_dir}): {mode}: {reason}"
        ) from None
    if not (local / "config.json").is_file():
        raise ModelResolutionError(f"{where}: {name_or_path} (revision {revision or 'main'}, cache {cache_dir}): "
                                   f"the snapshot {local} has no config.json (not a transformers model)")
    _resolved[key] = local
    return local


def resolve_recipe_models(recipe: Recipe) -> dict[str, Path]:
    """Every non-tiny model the recipe names, resolved before anything starts: {role: directory}.
    Tiny models are built later by their stages (they depend on the recipe, not on a download)."""
    m = recipe.models
    out: dict[str, Path] = {}
    roles = [("policy", m.policy), ("judge", recipe.judge_model)]
    for role, spec in roles:
        if spec is not None and not spec.is_tiny:
            where = f"models.{role}.name_or_path"
            try:
                out[role] = resolve_model(spec.name_or_path, revision=spec.revision, cache=m.hub_cache, where=where)
            except ModelResolutionError:
                if not (spec.lay_tiny_if_missing and looks_like_hub_id(spec.name_or_path)):
                    raise
                lay_tiny_model(spec.name_or_path, cache=m.hub_cache, tiny_cfg=spec.tiny, seed=recipe.seed)
                out[role] = resolve_model(spec.name_or_path, revision=spec.revision, cache=m.hub_cache, where=where)
    if (m.teacher.kind == "vllm" or m.teacher.launch) and m.teacher.model:
        out["teacher"] = resolve_model(m.teacher.model, revision=m.teacher.revision, cache=m.hub_cache,
                                       where="models.teacher.model")
    return out


def snapshot_commit(model_dir: Path) -> str:
    """A 40-hex id of a model directory's files (names and bytes), the snapshot's "commit"."""
    digest = hashlib.sha1()
    for f in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(model_dir)).encode() + b"\0")
        digest.update(f.read_bytes())
    return digest.hexdigest()


def lay_tiny_model(repo_id: str, *, cache: str | Path | None = None, tiny_cfg: TinyModelConfig | None = None,
                   seed: int = 0, chat_template: str | None = CHATML_TEMPLATE, verdict_token: bool = True) -> Path:
    """A tiny model (byte tokenizer with `chat_template`) as hub id `repo_id` in the hub cache:
    `models--ORG--NAME/snapshots/<commit>/` plus `refs/main`. Returns the snapshot directory;
    an existing complete snapshot of the same files is kept. `verdict_token`: the tokenizer spells
    the judge's verdict prefix as one token, as the tiny world's judges do: spelled byte by byte, a
    smoke-sized judge wrote near-miss verdict lines ("Is the ste corest (Yes/No)? Yes")."""
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.tiny import build_tiny_model

    if not looks_like_hub_id(repo_id):
        raise ModelResolutionError(f"tiny: {repo_id!r} is not a hub id (ORG/NAME)")
    repo = hub_cache_dir(cache) / ("models--" + repo_id.replace("/", "--"))
    repo.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tiny-", dir=repo) as tmp:
        built = build_tiny_model(tiny_cfg or TinyModelConfig(), Path(tmp) / "model", seed=seed,
                                 verdict_token=verdict_token)
        if chat_template is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(built)
            tok.chat_template = chat_template
            tok.save_pretrained(built)
        commit = snapshot_commit(built)
        snapshot = repo / "snapshots" / commit
        if not (snapshot / "config.json").is_file():
            snapshot.parent.mkdir(parents=True, exist_ok=True)
            if snapshot.exists():
                shutil.rmtree(snapshot)
            built.rename(snapshot)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def max_position_embeddings(model_dir: str | Path) -> int | None:
    """The model's positional limit from its config.json, or None where the config does not say."""
    import json

    path = Path(model_dir) / "config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(cfg.get(key), int):
            return cfg[key]
    text_cfg = cfg.get("text_config")
    if isinstance(text_cfg, dict) and isinstance(text_cfg.get("max_position_embeddings"), int):
        return text_cfg["max_position_embeddings"]
    return None


_hub_reachable: bool | None = None


def hub_reachable() -> bool:
    """Whether the hub's host resolves (once per process). huggingface_hub retries a failed request
    five times with back-off (~23 s), so a dry run without network asks the resolver first."""
    global _hub_reachable
    if _hub_reachable is None:
        import socket
        from urllib.parse import urlparse

        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            _hub_reachable = False
        else:
            try:
                socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "", 443)
                _hub_reachable = True
            except OSError:
                _hub_reachable = False
    return _hub_reachable


def reachable_config_positions(name_or_path: str, *, revision: str | None = None,
                               cache: str | Path | None = None) -> int | None:
    """max_position_embeddings from a model's config.json where it can be read without fetching
    weights (a directory, or the hub's config.json from the cache or the network); None if not."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return max_position_embeddings(path)
    if not looks_like_hub_id(name_or_path):
        return None
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json", cache_dir=hub_cache_dir(cache), revision=revision)
    if isinstance(cached, str):
        return max_position_embeddings(Path(cached).parent)
    if not hub_reachable():
        return None
    try:
        cfg = hf_hub_download(name_or_path, "config.json", revision=revision, cache_dir=hub_cache_dir(cache))
    except Exception:  # unknown or gated repo: the check cannot be made
        return None
    return max_position_embeddings(Path(cfg).parent)


def length_checks(recipe: Recipe) -> tuple[list[str], list[str]]:
    """(errors, notes) of `--dry-run`: each role's max_model_len_tokens (and the trainer's
    max_seq_len_tokens) against its model's max_position_embeddings, where the config is reachable."""
    m = recipe.models
    judge = recipe.judge_model
    checks: list[tuple[str, object, int, str]] = [
        ("policy", m.policy, recipe.generator.max_model_len_tokens, "generator.max_model_len_tokens"),
        ("judge" if judge else "policy", judge or m.policy, recipe.judge.max_model_len_tokens,
         "judge.max_model_len_tokens"),
        ("policy", m.policy, recipe.trainer.max_seq_len_tokens, "trainer.max_seq_len_tokens"),
    ]
    if judge is not None:
        checks.append(("judge", judge, recipe.trainer.max_seq_len_tokens, "trainer.max_seq_len_tokens"))
    errors, notes = [], []
    for field, cfg in (("generator", recipe.generator), ("judge", recipe.judge)):
        if cfg.sampling.max_new_tokens >= cfg.max_model_len_tokens:
            errors.append(f"{field}.sampling.max_new_tokens ({cfg.sampling.max_new_tokens}) leaves no room for a "
                          f"prompt within {field}.max_model_len_tokens ({cfg.max_model_len_tokens})")
    for role, spec, wanted, field in checks:
        if spec.is_tiny:
            limit = spec.tiny.max_position_embeddings
        else:
            limit = reachable_config_positions(spec.name_or_path, revision=spec.revision, cache=m.hub_cache)
        if limit is None:
            notes.append(f"{field} ({wanted}): models.{role} {spec.name_or_path}'s config.json not reachable; unchecked")
        elif wanted > limit:
            errors.append(f"{field} ({wanted}) exceeds models.{role} {spec.name_or_path}'s max_position_embeddings "
                          f"({limit})")
        else:
            notes.append(f"{field} ({wanted}) <= models.{role} max_position_embeddings ({limit})")
    return errors, list(dict.fromkeys(notes))
