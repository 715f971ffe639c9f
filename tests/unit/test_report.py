"""The run report's pure parts: headline rows, the reference-target checks and the plots, from a
hand-written summary (what `report.collect` builds from stage metrics)."""

from __future__ import annotations

from rprm_ray import report


def summary(beam_steps: int = 900, beam_acc: float = 80.0) -> dict:
    return {
        "pass@1_per_iteration": {"0": 60.0, "1": 62.0, "2": 64.5},
        "pass@1_M1": 60.0,
        "pass@1_final": 64.5,
        "judge": {
            "sft": {"f1": 72.0, "error_acc": 70.0, "correct_acc": 74.1, "f1_at_k": {"1": 60.0, "8": 71.0}},
            "dpo": {"f1": 71.0, "error_acc": 69.0, "correct_acc": 73.1, "f1_at_k": {"1": 61.0, "8": 65.0}},
        },
        "best_of_n": {
            "bon_min": {"1": 50.0, "4": 70.0, "8": 76.0}, "bon_last": {"1": 50.0, "4": 68.0, "8": 74.0},
            "bon_prod": {"1": 50.0, "4": 69.0, "8": 75.0}, "bon_mean": {"1": 50.0, "4": 66.0, "8": 70.0},
            "majority": {"1": 50.0, "4": 64.0, "8": 68.0}, "oracle": {"1": 50.0, "4": 85.0, "8": 92.0},
            "best_aggregation": "min", "problems": 100, "pass@1_samples": 61.0,
            "candidate_steps": 3200, "candidate_steps_at_n": {"1": 400, "4": 1600, "8": 3200},
        },
        "beam": {"beam_accuracy": beam_acc, "candidate_steps": beam_steps, "problems": 100, "beams": 8,
                 "beam_width": 4},
    }


def test_target_rows_state_each_target_with_its_measurement() -> None:
    rows = dict(report.target_rows(summary()))
    assert rows["judge F1 after SFT >= 70"] == "met: 72.0"
    assert rows["judge F1 after DPO >= after SFT"] == "NOT met: 71.0 vs 72.0"
    assert "judge DPO trains on >= 200 critique pairs" not in rows  # a run recorded without its count
    assert rows["judge F1 at K=8 >= at K=1"] == "met: 65.0 vs 61.0"  # the last phase's curve
    assert rows["pass@1 after self-rewarding >= M1 + 3, interval above 0"] == "met: 64.5 vs 60.0 (+4.5)"
    assert rows["no iteration loses more than 1 point of pass@1"] == "met: 60.0 -> 62.0 -> 64.5"
    assert rows["Best-of-8 >= pass@1 + 10"] == "met: 76.0 vs pass@1 61.0 (mean of the 8 samples; greedy 64.5)"
    # Beam spent 900 steps: the fair Best-of-N is the smallest n spending at least that (n=4).
    assert rows["beam >= Best-of-N at equal candidate steps"] == (
        "met: beam 80.0% (900 steps) vs Best-of-4 70.0% (1600 steps)")


def test_the_judge_dpo_needs_hundreds_of_pairs() -> None:
    s = summary()
    s["judge"]["dpo"]["pairs"] = 124
    assert dict(report.target_rows(s))["judge DPO trains on >= 200 critique pairs"] == "NOT met: 124 pairs"
    s["judge"]["dpo"]["pairs"] = 240
    assert dict(report.target_rows(s))["judge DPO trains on >= 200 critique pairs"] == "met: 240 pairs"


def test_beam_within_two_percent_of_a_best_of_n_budget_is_compared_with_it() -> None:
    rows = dict(report.target_rows(summary(beam_steps=3220, beam_acc=76.0)))
    assert rows["beam >= Best-of-N at equal candidate steps"] == (
        "met: beam 76.0% (3220 steps) vs Best-of-8 76.0% (3200 steps)")


def test_beam_over_every_best_of_n_budget_is_not_met() -> None:
    rows = dict(report.target_rows(summary(beam_steps=5000, beam_acc=99.0)))
    assert rows["beam >= Best-of-N at equal candidate steps"].startswith("NOT met: beam spent 5000 steps")


def test_best_of_n_is_measured_against_the_samples_own_pass_at_1() -> None:
    s = summary()
    s["best_of_n"]["pass@1_samples"] = 66.5
    assert report.target_rows(s)[5] == ("Best-of-8 >= pass@1 + 10",
                                        "NOT met: 76.0 vs pass@1 66.5 (mean of the 8 samples; greedy 64.5)")


def test_targets_without_their_data_are_left_out() -> None:
    assert report.target_rows({}) == []
    only_sft = {"judge": {"sft": {"f1": 10.0, "error_acc": 5.0, "correct_acc": 50.0, "f1_at_k": {}}}}
    assert report.target_rows(only_sft) == [("judge F1 after SFT >= 70", "NOT met: 10.0")]


def test_plots_include_accuracy_against_candidate_steps(tmp_path) -> None:
    made = {p.name for p in report.make_plots(summary(), tmp_path)}
    assert made == {"accuracy_per_iteration.png", "judge_f1_per_phase.png", "f1_vs_k.png",
                    "accuracy_vs_n.png", "accuracy_vs_candidate_steps.png"}
    assert all((tmp_path / name).stat().st_size > 1000 for name in made)
    budget = report.budget_series(summary())
    assert budget["Best-of-N (min)"] == ([4.0, 16.0, 32.0], [50.0, 70.0, 76.0])
    assert budget["beam search (N=8, M=4)"] == ([9.0], [80.0])


def test_headline_rows_name_every_phase() -> None:
    names = [name for name, _ in report.headline_rows(summary())]
    assert names[:2] == ["policy pass@1, M1 (after SFT)", "policy pass@1, final iteration"]
    assert "beam search (N=8, M=4)" in names and "Best-of-8 (min)" in names


def test_targets_carry_the_paired_interval_of_their_difference() -> None:
    s = summary(beam_steps=3220, beam_acc=76.0)
    s["pass@1_final_vs_M1"] = {"points": 4.5, "low": 1.25, "high": 7.75, "level": 0.95, "problems": 400}
    s["best_of_n"]["bon_vs_pass@1_samples"] = {"points": 15.0, "low": 12.0, "high": 18.0, "level": 0.95,
                                               "problems": 400}
    s["beam"]["beam_vs_bon"] = {"points": 0.0, "low": -3.0, "high": 3.0, "level": 0.95, "problems": 400, "n": 8}
    rows = dict(report.target_rows(s))
    assert rows["pass@1 after self-rewarding >= M1 + 3, interval above 0"] == (
        "met: 64.5 vs 60.0 (+4.5); difference +4.5, 95% CI [+1.2, +7.8]")
    s["pass@1_final_vs_M1"]["low"] = -0.5  # +4.5 on average, but not surely above M1
    assert dict(report.target_rows(s))["pass@1 after self-rewarding >= M1 + 3, interval above 0"].startswith(
        "NOT met: 64.5 vs 60.0 (+4.5); difference +4.5, 95% CI [-0.5,")
    assert rows["Best-of-8 >= pass@1 + 10"].endswith("greedy 64.5); difference +15.0, 95% CI [+12.0, +18.0]")
    assert rows["beam >= Best-of-N at equal candidate steps"] == (
        "met: beam 76.0% (3220 steps) vs Best-of-8 76.0% (3200 steps); difference +0.0, 95% CI [-3.0, +3.0]")


def test_time_goes_to_kinds_of_stage_summed_over_iterations_slowest_first() -> None:
    stages = {"iter_0/data": {"seconds": 3.0}, "iter_0/policy_sft": {"seconds": 240.0},
              "iter_1/search": {"seconds": 60.0}, "iter_1/step_dpo": {"seconds": 30.0},
              "iter_2/search": {"seconds": 90.0}, "iter_2/step_dpo": {"seconds": 30.0}, "final/beam": {}}
    kinds = report.time_by_stage_kind(stages)
    assert list(kinds.items()) == [("policy_sft", 240.0), ("search", 150.0), ("step_dpo", 60.0), ("data", 3.0),
                                   ("beam", 0.0)]
    lines = report.time_lines(kinds, most=2)
    assert lines[0] == "stage time 7.5 min, by kind of stage:"
    assert lines[1].split() == ["policy_sft", "4.0", "min", "53%"]
    assert lines[2].split() == ["search", "2.5", "min", "33%"]
    assert lines[3].split() == ["others", "1.1", "min", "14%"]
    assert report.time_lines({}) == []


def _psrlm_stages() -> dict:
    def pass_at_1(value, points=None):
        m = {"pass@1": value, "problems": 400}
        if points is not None:
            m["vs_baseline"] = {"points": points, "low": points - 3, "high": points + 3, "level": 0.95,
                                "problems": 400, "baseline": "iter_0/policy_eval"}
        return m

    def self_judge(acc):
        return {"self_judge_accuracy": acc, "self_judge_accuracy_interval": [acc - 4, acc + 4], "pairs": 200,
                "position_consistency": 90.0, "pair_accuracy": acc - 5, "overrules": 40,
                "overrule_precision": acc - 30, "own_step_accuracy": 70.0, "greedy_step_accuracy": 80.0}

    return {"iter_0/data": {}, "iter_0/policy_sft": {"loss_last": 0.1}, "iter_0/policy_eval": pass_at_1(80.0),
            "iter_0/self_judge_eval": self_judge(90.0),
            "iter_1/search": {"problems": 128, "pairs": 300, "rollbacks": 12, "finished": 128},
            "iter_1/step_dpo": {}, "iter_1/policy_eval": pass_at_1(81.0, 1.0),
            "iter_1/self_judge_eval": self_judge(91.0),
            "iter_2/search": {"problems": 256, "pairs": 610, "rollbacks": 20, "finished": 256},
            "iter_2/step_dpo": {}, "iter_2/policy_eval": pass_at_1(79.5, -0.5),
            "iter_2/self_judge_eval": self_judge(88.0)}


def test_psrlm_iterations_are_tabled_per_model_and_checked_against_their_targets() -> None:
    iterations = report.iteration_rows(_psrlm_stages())
    assert list(iterations) == ["0", "1", "2"]
    assert iterations["2"]["step_pairs"] == 610 and iterations["2"]["rollbacks"] == 20
    assert iterations["1"]["self_judge_accuracy"] == 91.0 and iterations["0"]["self_judge_pairs"] == 200
    summary = {"iterations": iterations, "self_judge_accuracy_per_iteration": {"0": 90.0, "1": 91.0, "2": 88.0},
               "pass@1_per_iteration": {"0": 80.0, "1": 81.0, "2": 79.5}, "pass@1_M1": 80.0, "pass@1_final": 79.5}
    lines = dict(report.iteration_table_rows(summary))
    assert lines["M1 (SFT)"] == ("pass@1 80.0%; self-judge 90.0% [86.0, 94.0] on 200 own pairs, "
                                 "position-consistent 90.0%; overrules of its greedy step right 60.0% of 40; "
                                 "its own worked step right 70.0% where its greedy step is 80.0%")
    assert lines["M3"].startswith("pass@1 79.5% (-0.5 vs M1, CI [-3.5, +2.5]); self-judge 88.0%")
    assert lines["M3"].endswith("from 610 step pairs of 256 searched problems (20 rollbacks)")
    targets = dict(report.target_rows(summary))
    assert targets["self-judge pairwise accuracy on its own candidates at M1 >= 85%"] == "met: 90.0%"
    assert targets["self-judge accuracy at the last model >= at M1"] == "NOT met: M3 88.0% vs M1 90.0%"
    assert targets["no iteration loses more than 1 point of pass@1"] == "NOT met: 80.0 -> 81.0 -> 79.5"


def test_a_run_without_iterations_has_no_iteration_table() -> None:
    assert report.iteration_rows({"iter_0/judge_sft": {}, "iter_0/judge_eval_sft": {"sft_f1": 90.0}}) == {}
    assert report.iteration_rows({"iter_0/policy_eval": {"pass@1": 80.0}}) == {}


def test_the_judge_on_the_policys_own_mistakes_is_reported_and_checked() -> None:
    def phase(name: str, f1: float, own: float, own_k8: float | None = None) -> dict:
        m = {f"{name}_f1": 95.0, f"{name}_error_acc": 94.0, f"{name}_correct_acc": 96.0,
             f"{name}_own_f1": own, f"{name}_own_error_acc": own - 5, f"{name}_own_correct_acc": own + 5}
        if own_k8 is not None:
            m.update({f"{name}_f1_at_k1": 94.0, f"{name}_f1_at_k8": 95.0,
                      f"{name}_own_f1_at_k1": own - 1, f"{name}_own_f1_at_k8": own_k8})
        return m

    stages = {"iter_0/judge_eval_sft": phase("sft", 95.0, 70.0), "iter_0/judge_eval_dpo": phase("dpo", 95.0, 72.5, 75.0)}
    stages["iter_0/judge_eval_dpo"]["dpo_own_temperature_by_half"] = [0.5, 1.0]  # chosen per half on the other
    stages["iter_0/judge_dpo"] = {"pairs": 240, "steps": 4}

    class _Manifest:  # what collect reads of a run's manifest
        data = {"stages": {k: {"metrics": v} for k, v in stages.items()}}

        def metrics(self):
            return stages

    summary = report.collect(_Manifest())
    assert summary["judge"]["dpo"]["f1_at_k"] == {"1": 94.0, "8": 95.0}  # the injected set's curve only
    assert summary["judge"]["dpo"]["own_f1_at_k"] == {"1": 71.5, "8": 75.0}
    targets = dict(report.target_rows(summary))
    assert targets["judge F1 on the policy's own mistakes: after DPO > after SFT"] == "met: 72.5 vs 70.0"
    assert targets["judge F1 on the policy's own mistakes: K=8 sampled > greedy K=1"] == "met: 75.0 vs 72.5"
    assert targets["judge DPO trains on >= 200 critique pairs"] == "met: 240 pairs"
    rows = dict(report.headline_rows(summary))
    assert rows["judge F1 on M1's own mistakes after SFT (K=1 greedy)"] == "70.0 (error_acc 65.0, correct_acc 75.0)"
    assert rows["judge F1 vs K on M1's own mistakes after DPO (sampled, T 0.5 / 1 per half, each chosen on the "
                "other half)"] == "K=1: 71.5, K=8: 75.0"
    assert "judge F1 vs K after DPO (sampled)" in rows  # the injected set's temperature was not chosen


def test_best_of_n_figures_use_the_aggregation_chosen_on_the_other_half() -> None:
    s = summary()
    s["best_of_n"].update({"bon_validated": {"1": 50.0, "4": 69.0, "8": 74.0}, "aggregation_by_half": ["min", "prod"]})
    targets = dict(report.target_rows(s))
    assert targets["Best-of-8 >= pass@1 + 10"].startswith("met: 74.0 vs pass@1 61.0")
    assert targets["beam >= Best-of-N at equal candidate steps"] == (
        "met: beam 80.0% (900 steps) vs Best-of-4 69.0% (1600 steps)")
    rows = dict(report.headline_rows(s))
    assert rows["Best-of-8 (min / prod per half, each chosen on the other half)"].startswith(
        "74.0% (best here: min 76.0%,")
    assert report.budget_series(s)["Best-of-N (min / prod per half, each chosen on the other half)"][1] == [
        50.0, 69.0, 74.0]


def test_the_sft_spend_control_stands_beside_each_model_and_the_gain_is_checked_against_it(tmp_path) -> None:
    stages = _psrlm_stages()

    def control(value, points, low):
        return {"pass@1": value, "problems": 400,
                "policy_vs_control": {"points": points, "low": low, "high": points + 2, "level": 0.95,
                                      "problems": 400, "baseline": "iter_k/sft_control_eval"}}

    stages.update({"iter_1/sft_control": {"steps": 5}, "iter_1/sft_control_eval": control(80.5, 0.5, -1.5),
                   "iter_2/sft_control": {"steps": 9}, "iter_2/sft_control_eval": control(78.0, 1.5, 0.25)})

    class _Manifest:
        data = {"stages": {k: {"metrics": v} for k, v in stages.items()}}

        def metrics(self):
            return stages

    summary = report.collect(_Manifest())
    assert summary["sft_control_pass@1_per_iteration"] == {"0": 80.0, "1": 80.5, "2": 78.0}
    assert summary["pass@1_final_vs_sft_control"]["points"] == 1.5
    lines = dict(report.iteration_table_rows(summary))
    assert lines["M2"].endswith("its SFT-spend control 80.5% (+0.5 vs the control, CI [-1.5, +2.5])")
    assert "control" not in lines["M1 (SFT)"]
    targets = dict(report.target_rows(summary))
    assert targets["pass@1 after self-rewarding > its SFT-spend control, interval above 0"] == (
        "met: +1.5 points; difference +1.5, 95% CI [+0.2, +3.5]")
    made = report.make_plots(summary, tmp_path)
    assert (tmp_path / "accuracy_per_iteration.png") in made
