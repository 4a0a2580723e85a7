"""The flash-sale demo: a recommendation API under normal traffic, a flash sale and recovery, observed by aiwatch.

``aiwatch demo`` starts, on loopback, a gateway API and an inference service (two processes, a real network hop), a
numpy matrix-factorisation recommender behind a micro-batcher, a feature store with a cache, drift counting against
a reference profile built from the training data, and a load generator. See docs/demo.md.

Each part is a small module so that it can be swapped for the toolkit's own component:

- :mod:`aiwatch.demo.data`: seeded users, items, interactions and the live feature distributions per stage;
- :mod:`aiwatch.demo.model`: the recommender (trained at start-up, constant-time padded batches), called through
  the toolkit's own micro-batcher (:class:`aiwatch.MicroBatcher`);
- :mod:`aiwatch.demo.features`: the feature store and its cache (in-process LRU or Redis);
- :mod:`aiwatch.demo.fallback`: the gateway's graceful degradation (its deadline per real-time request, its recent
  answers, counted with :func:`aiwatch.degraded`);
- :mod:`aiwatch.demo.drift`: the drift hook (counts live values into the reference profile's bins);
- :mod:`aiwatch.demo.inference` / :mod:`aiwatch.demo.gateway`: the two services (run by :mod:`aiwatch.demo.serve`;
  the gRPC transport's stubs :mod:`aiwatch.demo.recommender_pb2` and :mod:`aiwatch.demo.recommender_pb2_grpc` are
  generated from ``recommender.proto``);
- :mod:`aiwatch.demo.loadgen`: the staged load generator (and the ``batch-backfill`` scenario's batch client);
- :mod:`aiwatch.demo.scrape` / :mod:`aiwatch.demo.summary`: per-stage numbers from the services' ``/metrics`` (read
  with :mod:`aiwatch.scrape`);
- :mod:`aiwatch.demo.runner`: the supervisor behind ``aiwatch demo``.
"""
