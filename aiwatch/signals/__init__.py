"""Serving-resource signals: GPU metrics from NVML, queue depth and micro-batching, feature-cache hits.

Each module is imported on use (``aiwatch.GpuCollector``, ``aiwatch.instrument_queue``, ``aiwatch.MicroBatcher``,
``aiwatch.FeatureCache``, ...); importing this package imports neither pynvml nor redis.
"""
