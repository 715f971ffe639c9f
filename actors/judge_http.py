"""JudgeHTTP: the process judge as an HTTP application (`rprm-ray serve`).

An ingress deployment composed with the ProcessJudge deployment of `actors/judge.py`: it
validates requests and turns them into `labeled_steps` tables (`rprm_ray.serving`), sends them to
the ProcessJudge replicas through a deployment handle in chunks of
`judge.max_batch_rows_per_request` rows (concurrently, so the judge's autoscaler sees the load),
and writes the JSON answer. The judge replicas scale by the recipe's `judge.autoscaling`; the
ingress itself is light (one replica, a fraction of a CPU).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from actors.judge import ProcessJudge, _serve_options
from rprm_ray import batches, serving
from rprm_ray.config import JudgeConfig

APP_NAME = "rprm-judge"
HEALTH_TIMEOUT_S = 10.0
api = FastAPI(title="rprm-ray process judge", docs_url=None, redoc_url=None)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@serve.deployment(name="JudgeHTTP", num_replicas=1, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class JudgeHTTP:
    def __init__(self, judge: Any, judge_cfg: dict[str, Any], style_name: str, aggregation: str,
                 model: dict[str, Any]):
        from rprm_ray.prompts import get_style

        self.judge = judge  # DeploymentHandle of ProcessJudge
        self.cfg = JudgeConfig.model_validate(judge_cfg)
        self.style = get_style(style_name)
        self.aggregation = aggregation
        self.model = model  # what /healthz reports: model_dir, origin, style, aggregation
        self.started = time.time()

    async def _score(self, rows: list[dict[str, Any]], k: int | None) -> tuple[Any, Any]:
        table = batches.from_rows(rows, "labeled_steps")
        size = self.cfg.max_batch_rows_per_request
        chunks = [table.slice(i, size) for i in range(0, table.num_rows, size)]
        results = await asyncio.gather(*(self.judge.score_steps.remote(c, k) for c in chunks))
        return (batches.concat([c for c, _ in results], "critiques"),
                batches.concat([s for _, s in results], "step_scores"))

    @api.get("/healthz")
    async def healthz(self) -> Any:
        """200 once a judge replica answers (its weights loaded), 503 while none does."""
        try:
            info = await asyncio.wait_for(self.judge.info.remote(), HEALTH_TIMEOUT_S)
        except Exception as exc:  # starting, or every replica busy past the timeout
            return _error(503, f"/healthz: no judge replica answered ({type(exc).__name__})")
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1), **self.model,
                "checksum": info["checksum"]}

    @api.post("/v1/score")
    async def score(self, request: Request) -> Any:
        try:
            req = serving.parse_body(await request.body(), serving.ScoreRequest)
        except serving.RequestError as exc:
            return _error(400, f"/v1/score: {exc}")
        critiques, scores = await self._score(serving.labeled_step_rows("s0", req.question, req.steps), req.k)
        return serving.score_response(critiques, scores, len(req.steps))

    @api.post("/get_reward")
    async def get_reward(self, request: Request) -> Any:
        try:
            req = serving.parse_body(await request.body(), serving.RewardRequest)
        except serving.RequestError as exc:
            return _error(400, f"/get_reward: {exc}")
        rows, ids = [], []
        for i, text in enumerate(req.query):
            try:
                question, steps = serving.split_full_text(self.style, text)
            except serving.RequestError as exc:
                return _error(400, f"/get_reward: field 'query'[{i}]: {exc}")
            ids.append(f"q{i}")
            rows += serving.labeled_step_rows(ids[-1], question, steps)
        _, scores = await self._score(rows, None)
        return {"rewards": serving.rewards(scores, ids, self.aggregation)}


def build_app(judge_cfg: JudgeConfig, model_dir: str, style_name: str, aggregation: str,
              engine_overrides: dict[str, Any], origin: str) -> Any:
    """The bound application: JudgeHTTP in front of a ProcessJudge on `model_dir`."""
    judge = ProcessJudge.options(user_config={"model_dir": model_dir, "checksum": None},
                                 **_serve_options(judge_cfg))
    judge_app = judge.bind(judge_cfg.model_dump(mode="json"), style_name, engine_overrides)
    model = {"model_dir": model_dir, "origin": origin, "prompt_style": style_name, "aggregation": aggregation}
    return JudgeHTTP.bind(judge_app, judge_cfg.model_dump(mode="json"), style_name, aggregation, model)
