"""Resumable trainer checkpoints, the pure parts: when to save, the fingerprint, which checkpoint a
resumed call picks and which ones a new save removes."""

from __future__ import annotations

import json
import random

import pytest

from rprm_ray.batches import from_rows
from rprm_ray.config import Recipe, TrainerConfig
from rprm_ray.trainer_checkpoints import (
    MARKER,
    call_start,
    fingerprint,
    is_save_step,
    pick_checkpoint,
    read_markers,
    table_digest,
    tag_for,
    tags_to_remove,
)


def _table(n: int = 4, completion: str = "ok"):
    return from_rows([{"example_id": f"e{i}", "kind": "policy", "prompt": f"Q{i}", "completion": completion}
                      for i in range(n)], "sft_examples")


def test_saves_every_interval_but_not_at_the_start_or_the_last_step() -> None:
    assert [s for s in range(0, 11) if is_save_step(s, 3, 10)] == [3, 6, 9]
    assert [s for s in range(0, 13) if is_save_step(s, 3, 12)] == [3, 6, 9]  # 12: the final model
    assert not any(is_save_step(s, None, 10) for s in range(11))
    assert not any(is_save_step(s, 50, 10) for s in range(11))  # a stage shorter than the interval


def test_the_interval_defaults_to_200_steps_and_null_turns_checkpoints_off() -> None:
    assert TrainerConfig().checkpoint_interval_steps == 200
    assert TrainerConfig(checkpoint_interval_steps=None).checkpoint_interval_steps is None
    with pytest.raises(ValueError):
        TrainerConfig(checkpoint_interval_steps=0)
    assert "checkpoints" in TrainerConfig.model_fields["checkpoint_interval_steps"].description


def test_a_changed_interval_may_resume_a_run() -> None:
    from rprm_ray.loop import RESUMABLE_CHANGES

    assert "trainer.checkpoint_interval_steps" in RESUMABLE_CHANGES
    assert Recipe().trainer.checkpoint_interval_steps == 200


def _fp(table=None, steps=10, lr=1e-3, cfg=None, world=2, start=None) -> str:
    start = start or call_start("/nonexistent/model", 0, random.Random(0).getstate())
    return fingerprint("sft", table_digest(table if table is not None else _table()), steps, lr,
                       cfg or TrainerConfig(), world, start)


def test_the_fingerprint_changes_with_everything_that_changes_the_trajectory() -> None:
    base = _fp()
    assert _fp() == base
    assert _fp(table=_table(completion="other")) != base
    assert _fp(table=_table(n=5)) != base
    assert _fp(steps=11) != base
    assert _fp(lr=2e-3) != base
    assert _fp(world=1) != base
    assert _fp(cfg=TrainerConfig(seed=1)) != base
    assert _fp(cfg=TrainerConfig(deepspeed={"zero_stage": 3})) != base
    assert _fp(start=call_start("/nonexistent/other", 0, random.Random(0).getstate())) != base
    assert _fp(start=call_start("/nonexistent/model", 5, random.Random(0).getstate())) != base
    assert _fp(start=call_start("/nonexistent/model", 0, random.Random(1).getstate())) != base


def test_the_fingerprint_ignores_what_does_not_change_the_trajectory() -> None:
    base = _fp()
    neutral = TrainerConfig(checkpoint_interval_steps=7, call_timeout_s=5.0, setup_timeout_s=5.0,
                            num_cpus_per_worker=3.0)
    assert _fp(cfg=neutral) == base
    table = _table(n=8)
    rechunked = table.slice(0, 3).to_batches() + table.slice(3).to_batches()
    import pyarrow as pa

    assert table_digest(pa.Table.from_batches(rechunked)) == table_digest(table)


def test_the_starting_weights_are_identified_by_their_files(tmp_path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    before = call_start(tmp_path, 0, None)
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    assert call_start(tmp_path, 0, None) != before


def test_the_skipped_columns_leave_the_digest() -> None:
    from rprm_ray.batches import from_rows as rows_of

    def pairs(ref):
        return rows_of([{"pair_id": "p", "problem_id": "q", "prompt": "Q", "chosen": "a", "rejected": "b", "kind": "step",
                         "ref_chosen_logp": ref, "ref_rejected_logp": ref}], "preference_pairs")

    skip = frozenset({"ref_chosen_logp", "ref_rejected_logp"})
    assert table_digest(pairs(-1.0), skip) == table_digest(pairs(-1.0000001), skip)
    assert table_digest(pairs(-1.0)) != table_digest(pairs(-1.0000001))


def _marker(step: int, fp: str = "fp") -> dict:
    return {"tag": tag_for(step), "step": step, "fingerprint": fp}


def test_the_newest_complete_checkpoint_of_the_same_input_is_picked() -> None:
    markers = {tag_for(4): _marker(4), tag_for(8): _marker(8), tag_for(12): None}  # 12: killed mid-save
    assert pick_checkpoint(markers, "fp", 20) == (tag_for(8), 8)
    assert pick_checkpoint(markers, "other input", 20) is None
    assert pick_checkpoint({tag_for(8): _marker(8, "stale"), tag_for(4): _marker(4)}, "fp", 20) == (tag_for(4), 4)
    assert pick_checkpoint({}, "fp", 20) is None
    # A marker copied under another tag name, or at/after the call's last step, is not resumed.
    assert pick_checkpoint({tag_for(4): _marker(8)}, "fp", 20) is None
    assert pick_checkpoint({tag_for(20): _marker(20)}, "fp", 20) is None


def test_markers_are_read_from_the_tag_directories(tmp_path) -> None:
    for step, text in ((4, json.dumps(_marker(4))), (8, "{half a json"), (12, None)):
        (tmp_path / tag_for(step)).mkdir()
        if text is not None:
            (tmp_path / tag_for(step) / MARKER).write_text(text)
    (tmp_path / "latest").write_text(tag_for(4))
    assert read_markers(tmp_path) == {tag_for(4): _marker(4), tag_for(8): None, tag_for(12): None}
    assert read_markers(tmp_path / "absent") == {}


def test_a_new_save_removes_every_other_checkpoint_but_the_kept_ones() -> None:
    markers = {tag_for(4): _marker(4), tag_for(8): _marker(8), tag_for(10): None,
               tag_for(2): _marker(2, "stale"), tag_for(12): _marker(12)}
    assert sorted(tags_to_remove(markers, tag_for(12))) == [tag_for(2), tag_for(4), tag_for(8), tag_for(10)]
    assert sorted(tags_to_remove(markers, tag_for(12), keep=2)) == [tag_for(2), tag_for(4), tag_for(10)]
    assert tags_to_remove({tag_for(12): _marker(12)}, tag_for(12)) == []


@pytest.mark.parametrize("name,interval", [("rprm_qwen2.5-math-7b", 200), ("psrlm_qwen2.5-math-7b", 500)])
def test_the_7b_recipes_checkpoint_their_long_stages(name: str, interval: int) -> None:
    from pathlib import Path

    from rprm_ray.config import load_recipe

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / f"{name}.yaml")
    assert recipe.trainer.checkpoint_interval_steps == interval
    longest = max(recipe.bootstrap.policy_sft_steps, recipe.bootstrap.judge_sft_steps)
    assert longest // interval >= 5  # a kill late in the longest stage loses a small part of it
