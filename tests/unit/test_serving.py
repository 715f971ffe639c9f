"""The judge's HTTP protocol without Ray: request checks, full-text splitting, responses, rewards."""

from __future__ import annotations

import pytest

from rprm_ray import batches, serving
from rprm_ray.prompts import get_style
from rprm_ray.serving import RequestError, RewardRequest, ScoreRequest, parse_body


def test_score_request_defaults_k_and_rejects_bad_fields() -> None:
    req = parse_body(b'{"question": "1+1", "steps": ["1+1=2", "A:2"]}', ScoreRequest)
    assert (req.question, req.steps, req.k) == ("1+1", ["1+1=2", "A:2"], None)
    cases = {
        b"": "request body is not JSON",
        b'"text"': "request body must be a JSON object, got str",
        b'{"steps": ["a"]}': "field 'question': missing field",
        b'{"question": "q", "steps": "a"}': "field 'steps': Input should be a valid list",
        b'{"question": "q", "steps": ["a", 3]}': "field 'steps[1]': Input should be a valid string",
        b'{"question": "q", "steps": ["a"], "k": 65}': "field 'k': Input should be less than or equal to 64",
        b'{"question": "q", "steps": ["a"], "extra": 1}': "field 'extra': unknown field",
        b'{"question": "q", "steps": [""]}': "field 'steps'[0]: a step must not be empty",
    }
    for body, reason in cases.items():
        with pytest.raises(RequestError) as err:
            parse_body(body, ScoreRequest)
        assert str(err.value).startswith(reason), (body, str(err.value))
        assert "\n" not in str(err.value)


def test_reward_request_ignores_openrlhf_extras() -> None:
    req = parse_body(b'{"query": ["Q:1\\nA:1\\n"], "prompts": ["Q:1\\n"], "labels": ["1"]}', RewardRequest)
    assert req.query == ["Q:1\nA:1\n"]
    with pytest.raises(RequestError, match="field 'query': List should have at least 1 item"):
        parse_body(b'{"query": []}', RewardRequest)


def test_split_full_text_compact() -> None:
    style = get_style("compact")
    text = style.policy_prompt("(3+4)*2") + style.format_solution(["3+4=7", "7*2=14", "A:14"])
    assert serving.split_full_text(style, text) == ("(3+4)*2", ["3+4=7", "7*2=14", "A:14"])
    # Chat-template markers around prompt and solution are not part of either.
    wrapped = f"<|im_start|>user\n{style.policy_prompt('9-2')}<|im_end|>\n<|im_start|>assistant\n9-2=7\nA:7<|im_end|>"
    assert serving.split_full_text(style, wrapped) == ("9-2", ["9-2=7", "A:7"])
    llama = f"<|start_header_id|>user<|end_header_id|>\n\n{style.policy_prompt('9-2')}<|eot_id|>" \
            "<|start_header_id|>assistant<|end_header_id|>\n\n9-2=7\nA:7<|eot_id|>"
    assert serving.split_full_text(style, llama) == ("9-2", ["9-2=7", "A:7"])
    with pytest.raises(RequestError, match="no 'Q:' line"):
        serving.split_full_text(style, "3+4=7\n")
    with pytest.raises(RequestError, match="no steps after the question"):
        serving.split_full_text(style, "Q:1+1\n")


def test_split_full_text_paper_keeps_multiline_questions_and_steps() -> None:
    style = get_style("paper")
    question = "Compute $x$.\nGiven: $x = 2 + 3$."
    steps = ["Add: $2 + 3 = 5$.", "So $x = 5$.\nThus \\boxed{5}."]
    text = style.policy_prompt(question) + style.format_solution(steps)
    got_question, got_steps = serving.split_full_text(style, "<|im_start|>user\n" + text + "<|im_end|>")
    assert got_question == question
    assert got_steps == [f"Step {i + 1}: {s}" for i, s in enumerate(steps)]
    with pytest.raises(RequestError, match="no 'Step 1:' line"):
        serving.split_full_text(style, style.policy_prompt(question) + "The answer is 5.")


def test_score_response_puts_rows_under_their_steps() -> None:
    critiques = batches.from_rows(
        [
            {"problem_id": "s0", "solution_id": "s0", "step_idx": i, "sample_idx": s, "prompt": "p",
             "critique": f"c{i}{s}", "verdict": v, "valid": v is not None, "p_yes": p, "label": None}
            for i, s, v, p in ((0, 0, "Yes", 0.9), (0, 1, None, None), (1, 0, "No", 0.2), (1, 1, "No", 0.4))
        ],
        "critiques",
    )
    scores = batches.from_rows(
        [{"problem_id": "s0", "solution_id": "s0", "step_idx": 1, "score": 0.3, "num_valid": 2, "num_invalid": 0},
         {"problem_id": "s0", "solution_id": "s0", "step_idx": 0, "score": 0.9, "num_valid": 1, "num_invalid": 1}],
        "step_scores",
    )
    assert serving.score_response(critiques, scores, 2) == {
        "step_scores": [0.9, 0.3],
        "critiques": [["c00", "c01"], ["c10", "c11"]],
        "verdicts": [["Yes", None], ["No", "No"]],
    }


@pytest.mark.parametrize(("aggregation", "expected"), [("min", [0.2, None]), ("last", [0.6, None]),
                                                          ("mean", [(0.9 + 0.2 + 0.6) / 3, None])])
def test_rewards_aggregate_each_solution(aggregation: str, expected: list) -> None:
    rows = [("q0", 0, 0.9), ("q0", 1, 0.2), ("q0", 2, 0.6), ("q1", 0, None)]
    scores = batches.from_rows(
        [{"problem_id": s, "solution_id": s, "step_idx": i, "score": v, "num_valid": int(v is not None),
          "num_invalid": int(v is None)} for s, i, v in rows],
        "step_scores",
    )
    assert serving.rewards(scores, ["q0", "q1"], aggregation) == pytest.approx(expected)


def test_labeled_step_rows_carry_the_previous_steps() -> None:
    rows = serving.labeled_step_rows("s0", "q", ["a", "b", "c"])
    assert [(r["step_idx"], r["previous_steps"], r["now_step"]) for r in rows] == [
        (0, [], "a"), (1, ["a"], "b"), (2, ["a", "b"], "c")]
    batches.from_rows(rows, "labeled_steps")  # valid rows of the judge's input table


def test_the_app_composes_the_judge_deployment_with_the_recipe_autoscaling() -> None:
    """`rprm-ray serve` reuses actors/judge.py's ProcessJudge behind the HTTP ingress, scaled as
    the recipe's judge.autoscaling says (built, not started: no Ray needed)."""
    from actors.judge import ProcessJudge
    from actors.judge_http import build_app
    from rprm_ray.config import AutoscalingConfig, JudgeConfig

    cfg = JudgeConfig(num_cpus_per_replica=2, autoscaling=AutoscalingConfig(
        min_replicas=1, max_replicas=3, target_ongoing_requests=4, upscale_delay_s=5, downscale_delay_s=30))
    ingress = build_app(cfg, "/models/judge", "paper", "prod", {"dtype": "bfloat16"}, "model")._bound_deployment
    assert ingress.name == "JudgeHTTP" and ingress.ray_actor_options == {"num_cpus": 0.1}
    judge = ingress.init_args[0]._bound_deployment
    assert judge.func_or_class is ProcessJudge.func_or_class
    auto = judge._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests, auto.upscale_delay_s,
            auto.downscale_delay_s) == (1, 3, 4, 5, 30)
    assert judge.user_config == {"model_dir": "/models/judge", "checksum": None}
    assert judge.ray_actor_options["num_cpus"] == 2
    assert judge.init_args[1:] == ("paper", {"dtype": "bfloat16"})
    assert ingress.init_args[2:4] == ("paper", "prod")


def test_client_turns_silence_and_refusal_into_one_error() -> None:
    import socket

    from rprm_ray.client import JudgeServiceError, health

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(JudgeServiceError, match=r"/healthz: no answer \(TimeoutError") as err:
            health(url, timeout_s=0.5)
        assert err.value.status == 0
    with pytest.raises(JudgeServiceError, match="unreachable"):
        health(url, timeout_s=2)  # closed now: connection refused
