"""The fraud graph written as a plain FastAPI service: what bench/pipeline.py compares a
Modelhub pipeline with. Hand-written the usual way: a pydantic body, a sync endpoint (in
FastAPI's thread pool), redis-py (one pipelined round trip of HMGETs per request), two ONNX
Runtime sessions run one after the other, numpy for the transform and the rule.

Env: FRAUD_A, FRAUD_B (ONNX paths), REDIS_URL, FEATURE_SET, ORT_INTRA_OP (1).
Run: uvicorn pipeline_fastapi:app --app-dir bench --workers 2
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import redis
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

FEATURES = [f"f{i}" for i in range(7)]
MEAN = np.array([1500.0] + [0.0] * 7, dtype=np.float32)
STD = np.array([900.0] + [1.0] * 7, dtype=np.float32)
INTRA = int(os.environ.get("ORT_INTRA_OP", "1"))


def _session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


SESSIONS = [_session(os.environ["FRAUD_A"]), _session(os.environ["FRAUD_B"])]
STORE = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=0.2)
FEATURE_SET = os.environ.get("FEATURE_SET", "bench-cards")
app = FastAPI()


class Body(BaseModel):
    inputs: dict[str, list[float]]


@app.post("/predict")
def predict(body: Body) -> dict[str, object]:
    cards = [int(c) for c in body.inputs["card_id"]]
    amounts = np.array(body.inputs["amount"], dtype=np.float32)
    pipe = STORE.pipeline(transaction=False)
    for card in cards:
        pipe.hmget(f"mh:feat:{FEATURE_SET}:{card}", FEATURES)
    rows = pipe.execute()
    for card, values in zip(cards, rows, strict=True):
        if values[0] is None:
            raise HTTPException(404, f"unknown card {card}")
    features = np.array([[float(v) for v in values] for values in rows], dtype=np.float32)
    x = (np.concatenate([amounts[:, None], features], axis=1) - MEAN) / STD
    y = np.mean([s.run(["y"], {"x": x.astype(np.float32)})[0] for s in SESSIONS], axis=0)
    score = y[:, 1]
    action = np.where((score > 0.0) & (amounts > 1000), "review", "approve")
    return {"outputs": {"fraud_score": score.tolist(), "action": action.tolist()}}
