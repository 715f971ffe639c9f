"""`rprm-ray eval processbench|bon --judge`: argument checks, MODEL_OR_RUN resolution (run
directories from a hand-written manifest), judge settings, the judging plans and the way judged
step scores come back in the SCORES.jsonl shape. No engine starts here; the one real-model run is
tests/integration/test_eval_judge.py."""

from __future__ import annotations

import json
import math

import pytest

from rprm_ray import cli, judging, teachers
from rprm_ray.config import Recipe, SamplingConfig
from rprm_ray.data import BonItem, DataError, ProcessBenchItem
from rprm_ray.engines.base import Completion
from rprm_ray.evaluation import judged
from rprm_ray.manifest import Manifest
from rprm_ray.prompts import VERDICT_PREFIX, get_style, verdict_line


@pytest.fixture(autouse=True)
def only_eval_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", {"eval": cli.COMMANDS["eval"]})


def _pb_file(tmp_path):
    rows = [
        {"id": "t-0", "generator": "g", "problem": "37+25", "steps": ["37+25=62", "A:62"],
         "final_answer_correct": True, "label": -1},
        {"id": "t-1", "generator": "g", "problem": "9*3+1", "steps": ["9*3=28", "28+1=29", "A:29"],
         "final_answer_correct": False, "label": 0},
    ]
    path = tmp_path / "toy.json"
    path.write_text(json.dumps(rows))
    return str(path)


def _model_dir(path, **config):
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    return path


# --------------------------------------------------------------------------------------------
# Arguments


def test_scores_and_judge_are_exclusive_and_one_is_required(tmp_path, capsys):
    data = _pb_file(tmp_path)
    scores = tmp_path / "s.jsonl"
    scores.write_text("")
    assert cli.main(["eval", "processbench", "--data", data]) == 2
    assert capsys.readouterr().err.strip() == (
        "rprm-ray eval processbench: error: one of --scores SCORES.jsonl or --judge MODEL_OR_RUN is required"
    )
    assert cli.main(["eval", "bon", "--data", data, "--scores", str(scores), "--judge", "m"]) == 2
    assert capsys.readouterr().err.strip() == (
        "rprm-ray eval bon: error: pass either --scores SCORES.jsonl or --judge MODEL_OR_RUN, not both"
    )
    assert cli.main(["eval", "processbench", "--data", data, "--scores", str(scores), "--k", "4",
                     "--save-scores", "o.jsonl"]) == 2
    assert "--k, --save-scores only apply with --judge MODEL_OR_RUN" in capsys.readouterr().err


def test_judge_path_errors_are_one_line(tmp_path, capsys):
    data = _pb_file(tmp_path)
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    assert cli.main(["eval", "processbench", "--data", data, "--judge", str(tmp_path / "runs" / "empty")]) == 2
    err = capsys.readouterr().err
    assert "neither a model directory (no config.json) nor a run directory (no manifest.json)" in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main(["eval", "processbench", "--data", data, "--judge", str(tmp_path / "no" / "such")]) == 2
    assert "no such model or run directory" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# MODEL_OR_RUN


def _run_dir(tmp_path, state, **recipe_fields):
    """A run directory as `Run` leaves it: manifest.json with the recipe and the stages' state,
    paths recorded relative to where the run started (runs/<name>/...)."""
    recipe = Recipe.model_validate({"name": "tiny", **recipe_fields})
    run_dir = tmp_path / "moved" / "tiny"
    manifest = Manifest.create(run_dir, recipe.model_dump(mode="json"))
    manifest.record("iter_0/judge_sft", {}, {}, 1.0, state)
    return run_dir


def test_run_dir_resolves_to_its_final_judge_and_style(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the recorded runs/tiny/... does not exist from here
    run_dir = _run_dir(
        tmp_path,
        {"judge_sft_dir": "runs/tiny/iter_0/judge_sft/model", "judge_dir": "runs/tiny/iter_0/judge_dpo/model"},
        judge={"sampling": {"temperature": 0.0, "max_new_tokens": 77}, "max_model_len_tokens": 300},
        models={"judge": {"name_or_path": "tiny", "dtype": "bfloat16"}},
    )
    judge_dir = _model_dir(run_dir / "iter_0" / "judge_dpo" / "model")
    source = judged.resolve_judge(str(run_dir))
    assert source.model_dir == str(judge_dir.resolve())
    assert source.prompt_style == "compact"
    assert source.engine_overrides == {"dtype": "bfloat16", "trust_remote_code": False}

    greedy = judged.judge_settings(source, judged.JudgeOptions())
    assert (greedy.sampling.temperature, greedy.sampling.max_new_tokens, greedy.max_model_len_tokens) == (0.0, 77, 300)
    sampled = judged.judge_settings(source, judged.JudgeOptions(k=4, max_new_tokens=20, backend="transformers"))
    assert (sampled.sampling.temperature, sampled.sampling.max_new_tokens, sampled.backend) == (1.0, 20, "transformers")


def test_run_dir_without_a_judge_yet_or_with_missing_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = _run_dir(tmp_path, {"policy_dir": "runs/tiny/iter_0/policy_sft/model"})
    with pytest.raises(DataError, match="the run has no trained judge yet"):
        judged.resolve_judge(str(run_dir))

    other = tmp_path / "other"
    run_dir = _run_dir(other, {"judge_dir": "runs/tiny/iter_0/judge_sft/model"})
    with pytest.raises(DataError, match=r"judge_dir runs/tiny/iter_0/judge_sft/model is not a model directory"):
        judged.resolve_judge(str(run_dir))


def test_self_judging_run_uses_its_policy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = _run_dir(
        tmp_path, {"policy_dir": "runs/tiny/iter_1/step_dpo/model"},
        models={"judge": None}, loop={"mode": "psrlm"},
    )
    policy = _model_dir(run_dir / "iter_1" / "step_dpo" / "model")
    assert judged.resolve_judge(str(run_dir)).model_dir == str(policy.resolve())


def test_model_dir_uses_defaults_and_the_models_context(tmp_path):
    long_context = _model_dir(tmp_path / "big", max_position_embeddings=32768)
    source = judged.resolve_judge(str(long_context))
    assert (source.prompt_style, source.engine_overrides) == (None, {})
    assert judged.judge_settings(source, judged.JudgeOptions()).max_model_len_tokens == judged.MAX_MODEL_LEN_CAP_TOKENS
    short = judged.resolve_judge(str(_model_dir(tmp_path / "small", max_position_embeddings=512)))
    assert judged.judge_settings(short, judged.JudgeOptions(max_model_len=256)).max_model_len_tokens == 256
    assert judged.judge_settings(short, judged.JudgeOptions()).max_model_len_tokens == 512


# --------------------------------------------------------------------------------------------
# Plans and scores


def _pb_item(ident, steps, label):
    return ProcessBenchItem(id=ident, generator="g", problem="q", steps=steps,
                            final_answer_correct=label == -1, label=label, subset="toy")


def test_processbench_plan_judges_erroneous_solutions_only_up_to_their_label():
    items = [_pb_item("ok", ["a", "b", "c"], -1), _pb_item("bad", ["a", "b", "c", "d"], 1)]
    rows = judged.processbench_plan(items).to_pylist()
    assert [(r["solution_id"], r["step_idx"]) for r in rows] == [
        ("ok", 0), ("ok", 1), ("ok", 2), ("bad", 0), ("bad", 1)
    ]
    assert rows[4]["previous_steps"] == ["a"] and rows[4]["now_step"] == "b" and rows[4]["label"] is False


class ScriptedJudge:
    """An `Engine` for the compact judge's calls: from a context it writes its own line `R:x`;
    once shown the step (`N:`) its critique says No exactly when the step contains "BAD" (P(Yes)
    0.1, else 0.9), one token per character. Like the judge's engines it stops at a stop string
    and continues a prompt that ends inside its critique (the verdict continuation, the only call
    asking for log-probs). It records each call's prompt count and n."""

    backend = "scripted"
    model_dir = "scripted"

    def __init__(self):
        self.calls = []

    def generate(self, prompts, n, sampling, stop=None, logprobs=None, include_stop=False):
        self.calls.append((len(prompts), n))
        out = []
        for prompt in prompts:
            if "\nN:" not in prompt:
                out.append([self._completion("R:x", None)] * n)
                continue
            assert sampling.temperature == 0.0  # the verdict part is greedy
            correct = "BAD" not in prompt.rsplit("N:", 1)[1]
            full = verdict_line("Yes" if correct else "No")
            if prompt.endswith(VERDICT_PREFIX):
                assert logprobs is not None
                out.append([self._completion(full[len(VERDICT_PREFIX):], 0.9 if correct else 0.1)] * n)
            else:
                assert stop == [VERDICT_PREFIX] and include_stop and logprobs is None
                out.append([self._completion(VERDICT_PREFIX, None, "stop")] * n)
        return out

    @staticmethod
    def _completion(text, p_yes, finish="eos"):
        top = [{c: 0.0} for c in text]
        if p_yes is not None:
            top[text.index(" ") + 1] = {"Y": math.log(p_yes), "N": math.log(1 - p_yes)}
        return Completion(text=text, token_ids=[ord(c) for c in text], cumulative_logprob=None,
                          finish_reason=finish, tokens=list(text), top_logprobs=top)


def test_judged_processbench_scores_feed_the_scorer():
    items = [_pb_item("ok", ["a", "b"], -1), _pb_item("bad", ["a", "BAD", "c"], 1), _pb_item("miss", ["BAD", "b"], 1)]
    engine = ScriptedJudge()
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=96)
    step_scores = judged.judge_step_scores(
        engine, get_style("compact"), judged.processbench_plan(items), 3, greedy, "p_yes", chunk_rows=2, progress=False
    )
    # Chunks of 2 rows, three calls each (the judge's own line per context, the critique up to the
    # verdict prefix, the verdict with log-probs); greedy decodes once per step.
    assert engine.calls == [(2, 1)] * 9
    scores = judged.processbench_scores(step_scores)
    assert scores == {"ok": [pytest.approx(0.9)] * 2, "bad": [pytest.approx(0.9), pytest.approx(0.1)],
                      "miss": [pytest.approx(0.1), pytest.approx(0.9)]}
    assert set(step_scores.column("num_valid").to_pylist()) == {3}  # K=3 copies of the greedy critique

    from rprm_ray.commands.evaluate import processbench_report

    figures, _ = processbench_report(items, scores, 0.5, "judge")
    assert (figures["error_acc"], figures["correct_acc"]) == (50.0, 100.0)  # "miss" flags step 0, label 1


def test_bon_plan_and_scores_keep_candidates_apart():
    items = [
        BonItem(id="q1", question="?", steps=[["a", "BAD"], ["a"], []], labels=[False, True, False], answers=None),
        BonItem(id="q2", question="?", steps=[["x"]], labels=[True], answers=None),
    ]
    plan = judged.bon_plan(items)
    assert plan.column("solution_id").to_pylist() == ["q1#0", "q1#0", "q1#1", "q2#0"]
    engine = ScriptedJudge()
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=96)
    _, step_scores = judging.score_steps(engine, get_style("compact"), plan, 2, sampled, "p_yes")
    # Sampling: K own lines per distinct context in one call (both questions read "?": the first
    # steps share one context, "a" then the next step another), then the verdict part of every
    # critique of every step, greedy, in two calls (up to the verdict prefix, then the verdict).
    assert engine.calls == [(2, 2), (8, 1), (8, 1)]
    scores = judged.bon_scores(step_scores, items)
    assert scores == {"q1": [[pytest.approx(0.9), pytest.approx(0.1)], [pytest.approx(0.9)], []],
                      "q2": [[pytest.approx(0.9)]]}


def test_a_model_teacher_writes_critiques_by_the_judges_protocol():
    items = [BonItem(id="q1", question="?", steps=[["a", "BAD"]], labels=[False], answers=None)]
    plan = judged.bon_plan(items)
    engine = ScriptedJudge()
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=96)
    critiques = teachers.engine_critiques(plan, get_style("compact"), engine, 2, sampled)
    assert engine.calls == [(2, 2), (4, 1), (4, 1)]  # own lines per context, then every critique's rest (2 calls)
    rows = critiques.to_pylist()
    assert [r["prompt"] for r in rows] == ["Q:?\n", "Q:?\n", "Q:?\nP:a\n", "Q:?\nP:a\n"]
    assert rows[2]["critique"].startswith("R:x\nN:BAD\n")
    assert [r["verdict"] for r in rows] == ["Yes", "Yes", "No", "No"]


def test_a_model_teachers_finished_chunks_persist_and_are_read_back(tmp_path):
    from rprm_ray.shards import ShardStore

    items = [BonItem(id=f"q{i}", question="?", steps=[["a", "BAD"]], labels=[False], answers=None) for i in range(3)]
    plan = judged.bon_plan(items)
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=96)
    whole = teachers.engine_critiques(plan, get_style("compact"), ScriptedJudge(), 2, sampled)
    store = ShardStore(tmp_path, "critiques")
    chunked = teachers.engine_critiques(plan, get_style("compact"), ScriptedJudge(), 2, sampled, store=store,
                                        chunk_rows=2)
    assert store.finished_chunks() == [0, 1, 2] and chunked.equals(whole)
    again = ScriptedJudge()
    assert teachers.engine_critiques(plan, get_style("compact"), again, 2, sampled, store=store,
                                     chunk_rows=2).equals(whole)
    assert again.calls == []  # every chunk read back, nothing generated
