"""Baseline: one-process FastAPI computing x**2 inline (no worker, no batching)."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class In(BaseModel):
    x: float


@app.post("/predict")
async def predict(request: In) -> dict[str, float]:
    return {"y": request.x**2}
