"""The command line as a whole: --version, one error style, and the commands that need no Ray
(`runs`, `report`, `export`, `serve`'s settings, `eval prmbench`)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from rprm_ray.cli import EXPECTED_ERRORS, main
from rprm_ray.config import load_recipe
from rprm_ray.manifest import Manifest

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = REPO_ROOT / "recipes" / "tiny_arith.yaml"


def test_version_is_the_package_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    version = re.search(r'(?m)^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text()).group(1)
    assert capsys.readouterr().out.strip() == f"rprm-ray {version}"


def test_every_expected_error_class_exists() -> None:
    import importlib

    for module, name in EXPECTED_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception), (module, name)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["run", str(TINY), "--set", "judge.critiques_per_step=0"], "judge.critiques_per_step"),
        (["search", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["bootstrap", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["submit", "missing.yaml"], "missing.yaml: recipe file not found"),
        (["serve", "no/such/model/dir"], "JUDGE no/such/model/dir: no such model or run directory"),
        (["export", "nowhere", "--role", "judge", "--to", "out"], "RUN nowhere: not a run directory"),
        (["report", "nowhere"], "nowhere: not a run directory (no manifest.json)"),
        (["runs", "--root", "nowhere"], "--root nowhere: no such directory"),
        (["stop", "job-1"], "no cluster address"),
        (["eval", "prmbench", "--data", "missing.jsonl", "--scores", "s.jsonl"], "missing.jsonl"),
    ],
)
def test_expected_errors_share_one_style(argv, message, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    label = " ".join(argv[:2]) if argv[0] == "eval" else argv[0]
    assert err.startswith(f"rprm-ray {label}: error: "), err
    assert message in err and "\n" not in err, err


# --------------------------------------------------------------------------------------------
# runs and report


def _fake_run(root: Path, name: str, tiny_model_dir: Path | None = None) -> Path:
    """A run directory as the pipeline leaves it: manifest with stage metrics and model dirs."""
    recipe = load_recipe(TINY, [f"run_root={root}", f"name={name}"])
    run_dir = root / name
    manifest = Manifest.create(run_dir, recipe.model_dump(mode="json"))
    state = {}
    if tiny_model_dir is not None:
        import shutil

        shutil.copytree(tiny_model_dir, run_dir / "judge_dpo")
        (run_dir / "judge_dpo" / "checksum.txt").write_text("abc\n")
        (run_dir / "judge_dpo" / "train_metrics.json").write_text("{}")
        state = {"judge_dir": str(run_dir / "judge_dpo"), "policy_dir": str(run_dir / "judge_dpo")}
    manifest.record("iter_0/judge_eval_sft", {}, {"sft_f1": 71.5, "sft_error_acc": 60.0, "sft_correct_acc": 87.0}, 3.0, state)
    manifest.record("iter_1/policy_eval", {}, {"pass@1": 40.0}, 2.0, {})
    manifest.record("iter_2/policy_eval", {}, {"pass@1": 44.5}, 2.0, {})
    return run_dir


def test_runs_lists_mode_stage_and_figures(tmp_path, capsys) -> None:
    _fake_run(tmp_path, "first")
    (tmp_path / "not_a_run").mkdir()
    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    infos = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(infos) == 1
    info = infos[0]
    assert (info["name"], info["mode"], info["stages_done"], info["last_stage"]) == ("first", "guided", 3, "iter_2/policy_eval")
    assert info["figures"] == {"pass@1": 44.5, "judge_f1_sft": 71.5}
    assert main(["runs", "--root", str(tmp_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "mode", "stages"]
    assert table[1].split()[:4] == ["first", "guided", "3", "iter_2/policy_eval"]
    assert table[1].endswith("pass@1 44.5, judge_f1_sft 71.5")


def test_report_rebuilds_from_the_manifest(tmp_path, capsys) -> None:
    run_dir = _fake_run(tmp_path, "r")
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "policy pass@1, final iteration" in out and "44.5%" in out
    assert json.loads((run_dir / "metrics.json").read_text())["pass@1_final"] == 44.5
    assert "judge first-error F1 after SFT" in (run_dir / "report.html").read_text()


# --------------------------------------------------------------------------------------------
# export


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from rprm_ray.config import TinyModelConfig
    from rprm_ray.tiny import build_tiny_model

    return build_tiny_model(TinyModelConfig(), tmp_path_factory.mktemp("tiny"), seed=0, verdict_token=True)


def test_export_writes_a_self_contained_model_dir(tmp_path, tiny_dir, capsys) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    run_dir = _fake_run(tmp_path / "runs", "r", tiny_dir)
    out = tmp_path / "exported"
    assert main(["export", str(run_dir), "--role", "judge", "--to", str(out)]) == 0
    assert "exported the judge" in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "README.md"} <= names
    assert not names & {"checksum.txt", "train_metrics.json"}  # the run's, not the model's
    # The export alone: the run may go away.
    import shutil

    shutil.rmtree(run_dir)
    model = AutoModelForCausalLM.from_pretrained(out)
    source = AutoModelForCausalLM.from_pretrained(tiny_dir)
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(model(ids).logits, source(ids).logits)
    tokenizer = AutoTokenizer.from_pretrained(out)
    prompt = "Q:(3+4)*2\nP:3+4=7\n"
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False)
    assert text == prompt  # the compact judge reads its raw prompt
    generation = GenerationConfig.from_pretrained(out)
    recipe = load_recipe(TINY)
    assert generation.max_new_tokens == recipe.judge.sampling.max_new_tokens
    assert generation.do_sample == (recipe.judge.sampling.temperature > 0)
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert "mode `guided`" in card and "embedded arithmetic world" in card
    assert "| judge first-error F1 after SFT (K=1 greedy) | 71.5" in card
    assert "```yaml\nname: r\n" in card and "critiques_per_step:" in card


def test_export_refuses_to_overwrite_and_names_missing_models(tmp_path, tiny_dir, capsys) -> None:
    run_dir = _fake_run(tmp_path / "runs", "r", tiny_dir)
    out = tmp_path / "exported"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["export", str(run_dir), "--role", "policy", "--to", str(out)]) == 2
    assert "--to" in capsys.readouterr().err and (out / "keep.txt").is_file()
    assert main(["export", str(run_dir), "--role", "policy", "--to", str(out), "--force"]) == 0
    assert not (out / "keep.txt").exists()
    bare = _fake_run(tmp_path / "runs", "bare")  # no models recorded yet
    assert main(["export", str(bare), "--role", "judge", "--to", str(tmp_path / "x")]) == 2
    assert "the run has no trained judge yet" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# serve's settings (the service itself: tests/integration/test_serve_command.py)


def _serve_args(*argv: str):
    from rprm_ray.cli import build_parser

    return build_parser().parse_args(["serve", *argv])


def test_serve_settings_for_a_bare_model_a_run_and_a_recipe(tmp_path, tiny_dir) -> None:
    from rprm_ray.commands.serve import settings

    recipe, source, style = settings(_serve_args(str(tiny_dir)))
    assert (source.model_dir, style) == (str(tiny_dir.resolve()), "paper")
    assert recipe.judge.max_model_len_tokens == 512  # the model's own context
    run_dir = _fake_run(tmp_path / "runs", "r", tiny_dir)
    recipe, source, style = settings(_serve_args(str(run_dir), "--set", "judge.autoscaling.max_replicas=3"))
    assert source.model_dir == str((run_dir / "judge_dpo").resolve())
    assert style == "compact" and recipe.judge.autoscaling.max_replicas == 3
    recipe, _, style = settings(_serve_args(str(tiny_dir), "--recipe", str(TINY), "--prompt-style", "paper"))
    assert style == "paper" and recipe.name == load_recipe(TINY).name


def test_serve_refuses_a_busy_port(tiny_dir, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tiny_dir), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rprm-ray serve: error: cannot listen on 127.0.0.1:{port}"), err


# --------------------------------------------------------------------------------------------
# eval prmbench


def _prmbench_row(idx, classification, steps, error_steps):
    return {"idx": idx, "classification": classification, "modified_question": "Q", "modified_process": steps,
            "error_steps": error_steps}


def test_eval_prmbench_scores_published_files_as_prmbench_does(tmp_path, capsys) -> None:
    data = tmp_path / "prmtest_classified"
    data.mkdir()
    (data / "p1_circular.jsonl").write_text("\n".join(json.dumps(r) for r in [
        _prmbench_row(1, "circular", ["a", "b", "c"], [2, 34]),  # 34: past the last step, ignored
        _prmbench_row(2, "circular", ["a", "b"], [1]),
    ]) + "\n")
    (data / "p12_multi_solutions.jsonl").write_text("\n".join(json.dumps(r) for r in [
        _prmbench_row(7, "multi_solutions", ["a", "b"], []),
        _prmbench_row(7, "multi_solutions", ["x", "y", "z"], []),  # a repeated id: the first is kept
    ]) + "\n")
    scores = tmp_path / "scores.jsonl"
    scores.write_text("".join(json.dumps({"id": i, "step_scores": s}) + "\n" for i, s in [
        ("circular_1", [0.9, 0.1, 0.9]), ("circular_2", [0.8, 0.7]), ("multi_solutions_7", [0.9, 0.2])]))
    assert main(["eval", "prmbench", "--data", str(data), "--scores", str(scores), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["items"], figures["ignored_error_steps"], figures["repeated_ids"]) == (3, 1, 1)
    # circular: TP 3 (steps 1, 3 of item 1; step 2 of item 2), TN 1, FP 1, FN 0;
    # MS: TP 1, FN 1 (positive F1 only). Overall pools all: TP 4, TN 1, FP 1, FN 1.
    f1 = lambda tp, fp, fn: 2 * tp / (2 * tp + fp + fn)  # noqa: E731
    assert figures["categories"]["NCL"] == pytest.approx(100 * (0.5 * f1(3, 1, 0) + 0.5 * f1(1, 0, 1)))
    assert figures["categories"]["MS"] == pytest.approx(100 * f1(1, 0, 1))
    assert figures["overall"] == pytest.approx(100 * (0.5 * f1(4, 1, 1) + 0.5 * f1(1, 1, 1)))
    assert main(["eval", "prmbench", "--data", str(data), "--scores", str(scores)]) == 0
    table = capsys.readouterr().out
    assert "ignored error steps past the last step: 1; repeated ids (first kept): 1" in table
    assert table.splitlines()[-2].split()[0] == "Overall"


def test_eval_prmbench_with_a_judge_model(tmp_path, tiny_dir, capsys) -> None:
    """--judge goes through the same scorer; the untrained tiny judge (transformers engine, no Ray)
    writes no valid critique, so every step is unscored and counted correct."""
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in [
        _prmbench_row(1, "deception", ["1+1=2", "A:3"], [2]), _prmbench_row(2, "confidence", ["A:2"], [])]) + "\n")
    saved = tmp_path / "scores.jsonl"
    argv = ["eval", "prmbench", "--data", str(data), "--judge", str(tiny_dir), "--backend", "transformers",
            "--prompt-style", "compact", "--max-new-tokens", "4", "--save-scores", str(saved), "--json"]
    assert main(argv) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["items"] == 2 and figures["num_missing_scores"] == 3
    assert [json.loads(line) for line in saved.read_text().splitlines()] == [
        {"id": "deception_1", "step_scores": [None, None]}, {"id": "confidence_2", "step_scores": [None]}]
    # The saved scores give the same figures without the model.
    assert main(["eval", "prmbench", "--data", str(data), "--scores", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == figures
