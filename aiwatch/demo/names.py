"""What the demo's parts call themselves in aiwatch's labels: the two services, the model (and its queue) and the
feature cache.

One demo uses the defaults. The root-cause matrix runs several demos side by side against one Prometheus; each gets
its own prefix, so that every series, recording rule and alert of one demo carries names no other demo uses.

    >>> Names.prefixed("net50").gateway, Names.prefixed("net50").model
    ('net50-gateway', 'net50-recommender')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Names:
    gateway: str = "gateway"
    inference: str = "inference"
    #: the model's name, also the name of its micro-batcher's queue and the drift monitor's ``model`` label
    model: str = "recommender"
    cache: str = "user_features"

    @classmethod
    def prefixed(cls, prefix: str) -> Names:
        """The default names, each preceded by ``prefix-`` (the defaults themselves for an empty prefix)."""
        if not prefix:
            return cls()
        d = cls()
        return cls(f"{prefix}-{d.gateway}", f"{prefix}-{d.inference}", f"{prefix}-{d.model}", f"{prefix}-{d.cache}")
