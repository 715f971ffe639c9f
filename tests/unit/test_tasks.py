import json
import logging
from pathlib import Path

import pytest

from rprm_ray.batches import validate
from rprm_ray.config import TaskConfig, recipe_from_dict
from rprm_ray.data import DataError, load_processbench
from rprm_ray.prompts import PAPER_POLICY_TEMPLATE, get_style
from rprm_ray.tasks import TaskError, arith, arith_tables, arith_teacher, make_task
from rprm_ray.tasks.arith_task import ArithTask
from rprm_ray.tasks.dataset import DatasetTask
from rprm_ray.tasks.solution_steps import gsm8k_steps, solution_steps

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"

SMALL_ARITH = {"train_problems": 40, "eval_problems": 12, "seed": 3}


def _dataset_recipe(dataset: dict, **task):
    return recipe_from_dict(
        {
            "task": {"kind": "dataset", "dataset": dataset, **task},
            "models": {"prompt_style": "paper", "teacher": {"kind": "vllm", "model": "some/teacher"}},
        }
    )


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


# ---- make_task ------------------------------------------------------------------------------


def test_make_task_picks_the_world_and_the_recipe_style(tmp_path):
    arith_task = make_task(recipe_from_dict({"task": SMALL_ARITH}))
    assert isinstance(arith_task, ArithTask) and arith_task.style.name == "compact"
    assert arith_task.has_programmatic_teacher
    source = _write_jsonl(tmp_path / "p.jsonl", [{"problem": "1+1?", "answer": "2"}])
    dataset_task = make_task(_dataset_recipe({"train_problems": source, "eval_problems": source}))
    assert isinstance(dataset_task, DatasetTask) and dataset_task.style.name == "paper"
    assert not dataset_task.has_programmatic_teacher


def test_arith_task_refuses_the_paper_style():
    with pytest.raises(TaskError, match="compact"):
        ArithTask(TaskConfig(**SMALL_ARITH), get_style("paper"))


def test_unknown_split_is_named():
    task = ArithTask(TaskConfig(**SMALL_ARITH), get_style("compact"))
    with pytest.raises(TaskError, match="'test'"):
        task.problems("test")


# ---- ArithTask ------------------------------------------------------------------------------


def test_arith_task_gives_the_tables_of_the_arith_module(monkeypatch):
    cfg = TaskConfig(**SMALL_ARITH, error_rate=0.5)
    train, held_out = arith.make_splits(cfg)
    calls = []
    real_make_splits = arith.make_splits
    monkeypatch.setattr(arith, "make_splits", lambda c: calls.append(c) or real_make_splits(c))
    task = ArithTask(cfg, get_style("compact"))

    assert task.problems("train").equals(arith.problems_table(train))
    assert task.problems("eval").equals(arith.problems_table(held_out))
    assert task.labeled_steps("train").equals(arith_tables.labeled_steps_table(train, cfg.seed, cfg.error_rate))
    assert task.labeled_steps("eval").equals(
        arith_tables.labeled_steps_table(held_out, cfg.seed + 1, cfg.error_rate)
    )
    assert task.policy_sft(task.problems("train")).equals(arith_tables.policy_sft_table(train))
    assert task.pairwise_sft(task.problems("train"), 30, seed=7).equals(
        arith_tables.pairwise_sft_table(train, 7, 30)
    )
    assert len(calls) == 1  # splits are drawn once per task


def test_arith_task_writes_pairwise_rows_in_its_own_style():
    cfg = TaskConfig(**SMALL_ARITH)
    task = ArithTask(cfg, get_style("compact", distinct_judge_prompts=True))
    rows = task.pairwise_sft(task.problems("train"), 6, seed=7).to_pylist()
    assert rows and all(r["prompt"].startswith("J:") for r in rows)
    assert task.policy_sft(task.problems("train")).column("prompt")[0].as_py().startswith("Q:")


def test_arith_task_grades_and_critiques_like_arith():
    task = ArithTask(TaskConfig(**SMALL_ARITH), get_style("compact"))
    p = arith.make_problem("x", "(37+25)*3-8")
    assert task.grade(p.question, p.answer, "178") and task.grade(p.question, None, " 178 ")
    assert not task.grade(p.question, p.answer, "179") and not task.grade(p.question, p.answer, None)
    prev, now = ["37+25=62"], "62*3=187"
    assert task.teacher_critique(p.question, prev, now) == arith_teacher.teacher_critique(p.question, prev, now)
    assert task.teacher_critique(p.question, prev, now).endswith("No")


# ---- solution steps -------------------------------------------------------------------------


def test_paragraphs_are_steps_and_figures_stay_whole():
    solution = (
        "We have $x = 3.$  Also $y = 4$.\n\n"
        '[asy]\ndraw((0,0)--(1,1));\n\nlabel("A. B", (0,0));\n[/asy]\n\n'
        "So the sum is $\\boxed{7}$."
    )
    steps = solution_steps(solution)
    assert steps == [
        "We have $x = 3.$  Also $y = 4$.",
        '[asy]\ndraw((0,0)--(1,1));\nlabel("A. B", (0,0));\n[/asy]',  # blank line collapsed
        "So the sum is $\\boxed{7}$.",
    ]


def test_one_paragraph_is_cut_into_sentences_outside_math():
    solution = "First $a = 1. B$ holds.  Then \\[b = 2. C\\] follows! So $\\boxed{3}$ is it."
    assert solution_steps(solution) == [
        "First $a = 1. B$ holds.",
        "Then \\[b = 2. C\\] follows!",
        "So $\\boxed{3}$ is it.",
    ]


def test_everything_after_the_first_boxed_step_joins_it_and_no_box_means_no_solution():
    assert solution_steps("A.\n\nSo $\\boxed{2}$.\n\nCheck: 1+1=2.") == [
        "A.",
        "So $\\boxed{2}$.\nCheck: 1+1=2.",
    ]
    assert solution_steps("One.\n\nTwo, no answer given.") is None


def test_gsm8k_answer_becomes_steps_with_a_boxed_answer():
    assert gsm8k_steps("She has 16 - 3 = <<16-3=13>>13 eggs.\nShe earns $<<13*2=26>>26.\n#### 26") == [
        "She has 16 - 3 = 13 eggs.",
        "She earns $26. The answer is \\boxed{26}.",
    ]
    assert gsm8k_steps("no marker") is None


# ---- DatasetTask on tiny files --------------------------------------------------------------


@pytest.fixture
def tiny_sources(tmp_path):
    train = [
        {"id": 1, "problem": "What is 2+3?", "solution": "Add them.\n\nWe get $\\boxed{5}$.", "answer": "5"},
        {"id": 2, "problem": "What is 7-1?", "answer": "6"},  # no solution: skipped by policy SFT
        {"id": 3, "problem": "Half of 8?", "solution": "Halve it: $8/2 = \\boxed{4}$."},  # no answer field
        {"id": 4, "problem": "What is 9*9?", "answer": "81"},  # also an eval question: dropped
        {"id": 5, "problem": "What is 1+1?", "solution": "It is $\\boxed{2}$.", "answer": "2"},
    ]
    held_out = [
        {"id": "a", "problem": "What is  9*9?", "answer": "81"},
        {"id": "b", "problem": "3^2?", "answer": "9"},
    ]
    processbench = [
        {
            "id": "pb-0",
            "generator": "g",
            "problem": "2+2?",
            "steps": ["2+2=5", "so 5", "answer 5"],
            "final_answer_correct": False,
            "label": 0,
        },
        {
            "id": "pb-1",
            "generator": "g",
            "problem": "3+3?",
            "steps": ["3+3=6", "6*1=7", "so 7"],
            "final_answer_correct": False,
            "label": 1,
        },
        {
            "id": "pb-2",
            "generator": "g",
            "problem": "4+4?",
            "steps": ["4+4=8", "so 8"],
            "final_answer_correct": True,
            "label": -1,
        },
    ]
    pb_path = tmp_path / "toy_pb.json"
    pb_path.write_text(json.dumps(processbench))
    return {
        "train_problems": _write_jsonl(tmp_path / "train.jsonl", train),
        "eval_problems": _write_jsonl(tmp_path / "eval.jsonl", held_out),
        "eval_labeled_solutions": str(pb_path),
    }


def test_dataset_problems_are_limited_deduplicated_and_answered(tiny_sources):
    task = make_task(_dataset_recipe(tiny_sources, train_problems=3))
    train = validate(task.problems("train"), "problems")
    assert train.column("problem_id").to_pylist() == ["train-1", "train-2", "train-3"]
    assert train.column("answer").to_pylist() == ["5", "6", "4"]  # id 3's answer read from its \boxed{}
    full = make_task(_dataset_recipe(tiny_sources)).problems("train")
    assert "train-4" not in full.column("problem_id").to_pylist()  # same question as eval "a"
    held_out = validate(task.problems("eval"), "problems")
    assert held_out.column("problem_id").to_pylist() == ["eval-a", "eval-b"]
    assert task.stats["train_dropped_overlap"] == 1


def test_dataset_labeled_steps_stop_at_the_first_error(tiny_sources):
    task = make_task(_dataset_recipe(tiny_sources))
    steps = validate(task.labeled_steps("eval"), "labeled_steps").to_pylist()
    by_solution = {}
    for r in steps:
        by_solution.setdefault(r["solution_id"], []).append((r["step_idx"], r["label"], r["now_step"]))
    assert by_solution == {
        "pb-0": [(0, False, "2+2=5")],
        "pb-1": [(0, True, "3+3=6"), (1, False, "6*1=7")],
        "pb-2": [(0, True, "4+4=8"), (1, True, "so 8")],
    }
    assert steps[2]["previous_steps"] == ["3+3=6"]


def test_dataset_without_labeled_solutions_warns_once_and_gives_no_steps(tiny_sources, caplog):
    task = make_task(_dataset_recipe(tiny_sources))
    with caplog.at_level(logging.WARNING, logger="rprm_ray.tasks.dataset"):
        assert task.labeled_steps("train").num_rows == 0
        assert task.labeled_steps("train").num_rows == 0
    assert sum("train_labeled_solutions" in m for m in caplog.messages) == 1


def test_dataset_policy_sft_uses_paper_prompts_and_skips_rows_without_a_solution(tiny_sources):
    task = make_task(_dataset_recipe(tiny_sources))
    table = validate(task.policy_sft(task.problems("train")), "sft_examples")
    rows = {r["example_id"]: r for r in table.to_pylist()}
    assert sorted(rows) == ["policy/train-1", "policy/train-3", "policy/train-5"]
    assert task.stats["policy_sft_skipped"] == 1
    first = rows["policy/train-1"]
    assert first["prompt"] == PAPER_POLICY_TEMPLATE.format(problem="What is 2+3?")
    assert first["completion"] == "Step 1: Add them.\n\nStep 2: We get $\\boxed{5}$.\n\n"
    assert get_style("paper").split_steps(first["completion"]) == [
        "Step 1: Add them.",
        "Step 2: We get $\\boxed{5}$.",
    ]


def test_dataset_has_no_pairwise_examples_nor_teacher_of_its_own(tiny_sources):
    # Its pairwise (EFT) examples are the recipe teacher's (rprm_ray.eft, tested in test_eft.py).
    task = make_task(_dataset_recipe(tiny_sources))
    assert task.pairwise_sft(task.problems("train"), 100, seed=0).num_rows == 0
    with pytest.raises(TaskError, match="models.teacher.kind"):
        task.teacher_critique("q", [], "step")


def test_dataset_grades_with_math_verify(tiny_sources):
    task = make_task(_dataset_recipe(tiny_sources))
    assert task.grade("q", "\\frac{14}{3}", "14/3")
    assert task.grade("q", "27", "27.0")
    assert task.grade("q", "\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)")
    assert not task.grade("q", "\\frac{14}{3}", "14")
    assert not task.grade("q", None, "5") and not task.grade("q", "5", None)
    assert "grade_string_fallbacks" not in task.stats


@pytest.mark.parametrize(
    "field, message",
    [
        ("train_problems", "nowhere/train.jsonl: file not found"),
        ("eval_labeled_solutions", "nowhere/pb.json: file not found"),
    ],
)
def test_missing_files_raise_the_loaders_data_error(tiny_sources, tmp_path, field, message):
    missing = str(tmp_path / message.split(":")[0])
    task = make_task(_dataset_recipe({**tiny_sources, field: missing}))
    with pytest.raises(DataError, match=message):
        if field == "train_problems":
            task.problems("train")
        else:
            task.labeled_steps("eval")


# ---- DatasetTask on the real benchmark files ------------------------------------------------


def _real(path: Path) -> str:
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return str(path)


def test_math500_references_grade_themselves_and_make_paper_sft():
    math500 = _real(DATA / "math" / "math500.jsonl")
    task = make_task(
        _dataset_recipe({"train_problems": math500, "eval_problems": math500}, eval_problems=500)
    )
    problems = validate(task.problems("eval"), "problems")
    assert problems.num_rows == 500
    answers = problems.column("answer").to_pylist()
    assert all(
        task.grade(q, a, a) for q, a in zip(problems.column("question").to_pylist(), answers, strict=True)
    )
    assert "grade_string_fallbacks" not in task.stats  # math-verify read every reference
    # A neighbour's answer is (almost always) wrong: the grader is not saying yes to everything.
    wrong = sum(task.grade("q", a, b) for a, b in zip(answers, answers[1:] + answers[:1], strict=True))
    assert wrong < 25
    sft = validate(task.policy_sft(problems), "sft_examples").to_pylist()
    assert len(sft) == 500 and task.stats["policy_sft_skipped"] == 0
    paper = get_style("paper")
    for row, question in zip(sft, problems.column("question").to_pylist(), strict=True):
        assert row["prompt"] == paper.policy_prompt(question)
        steps = paper.split_steps(row["completion"])
        assert [paper.is_final_step(s) for s in steps] == [False] * (len(steps) - 1) + [True]
        assert not any("\n\n" in s for s in steps)  # a blank line would end a step early


def test_processbench_gsm8k_labeled_steps():
    path = _real(DATA / "processbench" / "gsm8k.json")
    math500 = _real(DATA / "math" / "math500.jsonl")
    task = make_task(
        _dataset_recipe({"train_problems": math500, "eval_problems": math500, "eval_labeled_solutions": path})
    )
    steps = validate(task.labeled_steps("eval"), "labeled_steps").to_pylist()
    items = {it.id: it for it in load_processbench(path)}
    seen = {}
    for r in steps:
        seen.setdefault(r["solution_id"], []).append(r)
    assert set(seen) == set(items)
    for sid, rows in seen.items():
        item = items[sid]
        labels = [r["label"] for r in sorted(rows, key=lambda r: r["step_idx"])]
        if item.label == -1:
            assert labels == [True] * len(item.steps)
        else:
            assert labels == [True] * item.label + [False]  # truncated at the first wrong step
        assert rows[-1]["now_step"] == item.steps[len(rows) - 1]


def test_max_labeled_solutions_takes_the_first_solutions_of_a_labeled_file(shared_data_dir):
    from rprm_ray.config import TaskConfig
    from rprm_ray.prompts import get_style
    from rprm_ray.tasks.dataset import DatasetTask

    cfg = TaskConfig(kind="dataset", max_labeled_solutions=3, dataset={
        "train_problems": str(shared_data_dir / "math" / "gsm8k_test.jsonl"),
        "eval_problems": str(shared_data_dir / "math" / "math500.jsonl"),
        "train_labeled_solutions": str(shared_data_dir / "processbench" / "gsm8k.json")})
    steps = DatasetTask(cfg, get_style("paper")).labeled_steps("train")
    assert len(set(steps.column("solution_id").to_pylist())) == 3
