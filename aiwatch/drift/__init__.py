"""Drift detection: reference profiles, exact statistical tests, a streaming monitor and fleet-wide PromQL."""
