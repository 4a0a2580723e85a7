"""Seeded synthetic data for the demo: a shop's users, items, past interactions and live request features.

The live features the drift hook watches are drawn from the *reference* distribution during normal traffic and
recovery, and from a shifted one during the flash sale: ``basket_value`` moves up (PSI about 0.3 against the
reference deciles) while ``items_in_cart`` and ``session_seconds`` keep their distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 20260401
N_USERS = 4000
N_ITEMS = 6000
N_FACTORS = 32
DRIFT_FEATURES: tuple[str, ...] = ("basket_value", "items_in_cart", "session_seconds")

#: lognormal(mu, sigma) of basket_value in euros; the sale shifts mu (PSI ~0.3 on the reference deciles).
BASKET_MU, BASKET_SIGMA, SALE_BASKET_SHIFT = 3.6, 0.6, 0.35


@dataclass(frozen=True)
class Interactions:
    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray


def interactions(seed: int = SEED, n_users: int = N_USERS, n_items: int = N_ITEMS,
                 per_user: int = 25) -> Interactions:
    """Implicit-feedback interactions drawn from hidden taste vectors (so the factorisation has something to find)."""
    rng = np.random.default_rng(seed)
    true_rank = 8
    taste = rng.normal(size=(n_users, true_rank))
    traits = rng.normal(size=(n_items, true_rank))
    popularity = rng.zipf(1.6, size=n_items).clip(max=50).astype(np.float64)
    users = np.repeat(np.arange(n_users), per_user)
    # Each user looks at popular items more often, and keeps those that match their taste.
    candidates = rng.choice(n_items, size=(n_users, per_user * 3), p=popularity / popularity.sum())
    affinity = np.einsum("uk,uck->uc", taste, traits[candidates])
    keep = np.argsort(-affinity, axis=1)[:, :per_user]
    items = np.take_along_axis(candidates, keep, axis=1).ravel()
    ratings = 1.0 + (np.take_along_axis(affinity, keep, axis=1).ravel() > 1.0)
    return Interactions(users.astype(np.int64), items.astype(np.int64), ratings)


def reference_features(n: int = 5000, seed: int = SEED + 1) -> dict[str, np.ndarray]:
    """The training data's request features: the reference profile is built from these."""
    return live_features(np.random.default_rng(seed), n, sale=False)


def live_features(rng: np.random.Generator, n: int, sale: bool, shift: float = 1.0) -> dict[str, np.ndarray]:
    """``n`` requests' context features; ``sale`` draws from the flash-sale distribution, whose basket values are
    shifted ``shift`` times :data:`SALE_BASKET_SHIFT`."""
    mu = BASKET_MU + (SALE_BASKET_SHIFT * shift if sale else 0.0)
    return {
        "basket_value": np.round(rng.lognormal(mu, BASKET_SIGMA, n), 2),
        "items_in_cart": rng.poisson(3.0, n).astype(np.float64),
        "session_seconds": np.round(rng.gamma(2.0, 90.0, n), 1),
    }


def user_ids(rng: np.random.Generator, n: int, new_user_share: float) -> np.ndarray:
    """Returning users follow a Zipf law over the known users; ``new_user_share`` of requests come from users the
    model never saw (ids >= N_USERS), as during a sale's marketing push."""
    known = (rng.zipf(1.3, n) - 1) % N_USERS
    new = N_USERS + rng.integers(0, 50 * N_USERS, n)
    return np.where(rng.random(n) < new_user_share, new, known).astype(np.int64)
