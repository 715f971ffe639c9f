"""PRM800K (openai/prm800k, `data/phase{1,2}_{train,test}.jsonl`) to the ProcessBench-style
labeled format the R-PRM seed stage reads (`id, generator, problem, steps,
final_answer_correct, label`; label = index of the first wrong step, -1 if none).

Each PRM800K line is one labeled solution. Its trajectory is rebuilt as the dataset's README
says: at each step the chosen completion's text, or the labeler's own `human_completion` (rated
+1) where none was chosen. A step rated -1 is wrong; a neutral 0 counts as correct unless
`neutral="error"`. Where the labeler stopped at a step without choosing (phase 2 stops at the
first error), that step is the first completion rated -1. The solution ends at its first wrong
step. Skipped, and counted by reason: screening questions, `bad_problem` / `give_up` solutions
in which no wrong step was found, a step with no rating, and repeats of a solution already
written (quality-control questions are served to every labeler).

`final_answer_correct` is True where the labeler reached a correct final answer
(`finish_reason: solution`) with no wrong step; it is False otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class Prm800kError(ValueError):
    """An unreadable input line; the message names the file and line."""


@dataclass
class Converted:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

    @property
    def with_error(self) -> int:
        return sum(r["label"] != -1 for r in self.rows)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise Prm800kError(f"{path}: cannot open ({exc.strerror})") from None
    with fh:
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if n == 1 and line.startswith("version https://git-lfs"):
                    raise Prm800kError(f"{path}: a Git LFS pointer, not the data (run `git lfs pull` in the "
                                       f"prm800k clone)")
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise Prm800kError(f"{path}:{n}: not a JSON line ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise Prm800kError(f"{path}:{n}: a line must be a JSON object")
                yield n, row
        except UnicodeDecodeError:
            raise Prm800kError(f"{path}: not UTF-8 text (a PRM800K file is UTF-8 JSONL)") from None


def _trajectory(steps: list[dict[str, Any]], bad_ratings: set[int]) -> tuple[list[str], int] | str:
    """(steps up to the first wrong one, its index or -1), or the reason to skip."""
    out: list[str] = []
    for i, step in enumerate(steps):
        completions = step.get("completions") or []
        chosen = step.get("chosen_completion")
        human = step.get("human_completion")
        if chosen is not None:
            if not 0 <= chosen < len(completions):
                return "chosen_completion out of range"
            text, rating = completions[chosen].get("text"), completions[chosen].get("rating")
        elif human is not None:
            text, rating = (human.get("text") if isinstance(human, dict) else human), 1
        else:  # the labeler stopped here: the step they rejected
            wrong = next((c for c in completions if c.get("rating") in bad_ratings), None)
            if wrong is None:
                return "without a wrong step"
            text, rating = wrong.get("text"), wrong.get("rating")
        if not isinstance(text, str) or not text.strip():
            return "empty step"
        if rating is None:
            return "unrated step"
        out.append(text)
        if rating in bad_ratings:
            return out, i
    return out, -1


def convert(path: str | Path, neutral: Literal["correct", "error"] = "correct") -> Converted:
    """Read one PRM800K JSONL file into ProcessBench-format rows."""
    path = Path(path)
    bad = {-1} if neutral == "correct" else {-1, 0}
    result = Converted()
    seen: set[str] = set()
    for n, row in _lines(path):
        if row.get("is_initial_screening_question"):
            result.skipped["screening question"] += 1
            continue
        question, label = row.get("question"), row.get("label")
        if not isinstance(question, dict) or not isinstance(label, dict):
            raise Prm800kError(f"{path}:{n}: needs 'question' and 'label' objects (is this a PRM800K file?)")
        problem = question.get("problem")
        if not isinstance(problem, str) or not isinstance(label.get("steps"), list):
            raise Prm800kError(f"{path}:{n}: needs question.problem (text) and label.steps (a list)")
        got = _trajectory(label["steps"], bad)
        finish = label.get("finish_reason")
        if isinstance(got, str):
            result.skipped[f"{finish} {got}" if got == "without a wrong step" else got] += 1
            continue
        steps, first_error = got
        if not steps:
            result.skipped["no steps"] += 1
            continue
        if first_error == -1 and finish != "solution":
            result.skipped[f"{finish} without a wrong step"] += 1
            continue
        ident = "prm800k-" + hashlib.sha256(json.dumps([problem, steps]).encode()).hexdigest()[:16]
        if ident in seen:
            result.skipped["repeated solution"] += 1
            continue
        seen.add(ident)
        generation = row.get("generation")
        result.rows.append({
            "id": ident,
            "generator": "prm800k-phase1" if generation is None else f"prm800k-gen{generation}",
            "problem": problem,
            "steps": steps,
            "final_answer_correct": first_error == -1 and finish == "solution",
            "label": first_error,
        })
    return result


def write(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """JSONL (or a JSON array when OUT ends in .json), written whole then renamed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        if out.suffix == ".json":
            json.dump(rows, fh, ensure_ascii=False)
        else:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return out
