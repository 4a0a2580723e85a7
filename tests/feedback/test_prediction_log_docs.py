"""docs/prediction-log.md: the Kafka sink example is a PredictionSink that PredictionLog drives as written (a
stand-in for confluent_kafka's Producer records what it is given: Kafka itself is not a dependency)."""

from __future__ import annotations

import json
import re
import sys
import types
from typing import Any

from prometheus_client import CollectorRegistry

import aiwatch
from tests.servers import REPO

DOC = REPO / "docs" / "prediction-log.md"


class RecordingProducer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config, self.messages, self.flushed = config, [], False

    def produce(self, topic: str, key: str, value: str) -> None:
        self.messages.append((topic, key, value))

    def poll(self, timeout: float) -> int:
        return 0

    def flush(self, timeout: float) -> int:
        self.flushed = True
        return 0


def test_the_kafka_example_is_a_sink_the_log_drives(monkeypatch: Any) -> None:
    block = next(b for b in re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S) if "KafkaSink" in b)
    monkeypatch.setitem(sys.modules, "confluent_kafka", types.SimpleNamespace(Producer=RecordingProducer))
    code = block.replace("aiwatch.PredictionLog(KafkaSink(", "aiwatch.PredictionLog(registry=CollectorRegistry(), "
                                                           "sink=KafkaSink(")
    namespace: dict[str, Any] = {"aiwatch": aiwatch, "CollectorRegistry": CollectorRegistry}
    exec(compile(code, str(DOC), "exec"), namespace)
    log = namespace["log"]
    assert isinstance(log.sink, aiwatch.PredictionSink)
    rid = log.log("ranker", {"basket_value": 3}, {"score": 0.5})
    log.close()
    producer = log.sink.producer
    assert producer.flushed
    [(topic, key, value)] = producer.messages
    assert topic == "predictions" and key == rid and json.loads(value)["basket_value"] == 3.0
