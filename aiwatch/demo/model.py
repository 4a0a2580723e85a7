"""A small, real recommender computed with numpy: PureSVD matrix factorisation plus a context re-ranker.

Training (a truncated SVD of the interaction matrix) runs at start-up in about a second. Inference pads every batch
to ``max_batch`` rows, as a compiled model with static shapes does on an accelerator, so the model's own time per
call stays roughly constant whatever the traffic: exactly what the demo needs to show that the model was not the
problem during the flash sale.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aiwatch.demo import data


@dataclass(frozen=True)
class Request:
    """One scoring request: who, plus the context features the re-ranker uses."""

    user_id: int
    basket_value: float
    items_in_cart: float
    session_seconds: float


class Recommender:
    """Scores every item for a user with the factorisation, then re-ranks the top candidates with the context."""

    def __init__(self, factors: int = data.N_FACTORS, max_batch: int = 2, candidates: int = 1000,
                 hidden: int = 1024, top_k: int = 10, seed: int = data.SEED) -> None:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import svds

        self.max_batch = max_batch
        self.candidates = candidates
        self.top_k = top_k
        inter = data.interactions(seed)
        matrix = csr_matrix((inter.ratings, (inter.users, inter.items)), shape=(data.N_USERS, data.N_ITEMS))
        v0 = np.random.default_rng(seed).random(min(matrix.shape))
        u, s, vt = svds(matrix, k=factors, v0=v0)
        self.user_factors = (u * np.sqrt(s)).astype(np.float32)
        self.item_factors = (vt.T * np.sqrt(s)).astype(np.float32)
        self.cold_start = self.user_factors.mean(axis=0)
        rng = np.random.default_rng(seed + 7)
        # Re-ranker: a two-layer MLP over [item factors, scaled context]; fixed random weights stand in for a
        # trained one (its cost, not its accuracy, is what the demo is about).
        self.w1 = rng.normal(scale=0.2, size=(factors + 3, hidden)).astype(np.float32)
        self.w2 = rng.normal(scale=0.01, size=(hidden, 1)).astype(np.float32)

    @classmethod
    def cached(cls, path: str | Path, max_batch: int = 2) -> Recommender:
        """A recommender whose trained factors come from ``path`` (an ``.npz`` written by an earlier call) or, when
        it does not exist yet, are trained and written there: several demo services on one machine train once."""
        path = Path(path)
        if path.is_file():
            model = cls.__new__(cls)
            with np.load(path) as saved:
                model._restore(max_batch, {k: saved[k] for k in saved.files})
            return model
        model = cls(max_batch=max_batch)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npz")
        np.savez(tmp, user_factors=model.user_factors, item_factors=model.item_factors, w1=model.w1, w2=model.w2)
        tmp.replace(path)  # atomic: a concurrent reader sees the whole file or none
        return model

    def _restore(self, max_batch: int, arrays: dict[str, np.ndarray]) -> None:
        self.max_batch, self.candidates, self.top_k = max_batch, 1000, 10
        self.user_factors, self.item_factors = arrays["user_factors"], arrays["item_factors"]
        self.w1, self.w2 = arrays["w1"], arrays["w2"]
        self.cold_start = self.user_factors.mean(axis=0)

    def predict(self, batch: Sequence[Request]) -> list[list[int]]:
        """Top-k item ids per request. The batch is padded to ``max_batch`` so its cost does not depend on its size."""
        if not 0 < len(batch) <= self.max_batch:
            raise ValueError(f"batch size must be 1..{self.max_batch}, got {len(batch)}")
        n = self.max_batch
        users = np.tile(self.cold_start, (n, 1))
        context = np.zeros((n, 3), dtype=np.float32)
        for row, req in enumerate(batch):
            if 0 <= req.user_id < data.N_USERS:
                users[row] = self.user_factors[req.user_id]
            context[row] = (np.log1p(req.basket_value) / 5, req.items_in_cart / 5, req.session_seconds / 300)
        scores = users @ self.item_factors.T  # (n, items)
        cand = np.argpartition(-scores, self.candidates, axis=1)[:, :self.candidates]
        feats = np.concatenate(
            [self.item_factors[cand], np.broadcast_to(context[:, None, :], (n, self.candidates, 3))], axis=2)
        hidden = np.maximum(feats @ self.w1, 0.0)
        rerank = (hidden @ self.w2)[..., 0] + np.take_along_axis(scores, cand, axis=1)
        order = np.argsort(-rerank, axis=1)[:, :self.top_k]
        best = np.take_along_axis(cand, order, axis=1)
        return [best[row].tolist() for row in range(len(batch))]

    def calibrate(self, target_seconds: float) -> float:
        """Size the candidate set so one padded call takes about ``target_seconds`` on this machine (within the
        item count); returns the measured seconds per call."""
        per_call = self.time_per_call()
        for _ in range(3):  # cost is not quite linear in the candidates (cache effects): a few rounds
            wanted = int(self.candidates * target_seconds / max(per_call, 1e-6))
            self.candidates = int(np.clip(wanted, 50, data.N_ITEMS - 1))
            per_call = self.time_per_call()
        return per_call

    def time_per_call(self, calls: int = 15) -> float:
        """Seconds per padded call, measured now (warms the model up too): the fastest of ``calls``, the model's own
        cost. The demo calibrates while its other processes start on the same cores; a median taken then can be half
        as much again as the model's time once they are up, and the capacity derived from it too low for the flash
        sale to overload the model."""
        req = [Request(1, 40.0, 3.0, 120.0)]
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            self.predict(req)
            times.append(time.perf_counter() - start)
        return min(times)
