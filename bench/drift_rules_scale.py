"""What the drift rules (the recording group and the drift alerts) cost a real Prometheus at fleet scale.

Writes an hour (``--minutes``) of a fleet's drift series as OpenMetrics: ``--replicas`` scrape targets x
``--features`` features x 10 bins of one model, a 30 s scrape, counters moving on every scrape (and a tenth of a
feature's values missing), each replica's reference ratios and reference missing share; backfills them into a TSDB
with ``promtool tsdb create-blocks-from openmetrics``; starts a real Prometheus on that TSDB with the drift groups
of ``aiwatch rules render`` (windows ``1h`` only, ``--windows`` to change) evaluated every ``--interval``; and prints
each rule's ``evaluationTime`` from ``/api/v1/rules`` (the mean of ``--evaluations`` evaluations) and the number of
series it produced.

The evaluations run at wall-clock time on data that ends at start-up, so each window holds the backfilled samples:
the cost per evaluation is that of a 1h window over a 30 s scrape (120 samples a series). A 1d window over a 15 s
scrape holds 48 times as many. For a window longer than ``--raw-window-max`` (the rules' ``drift.raw_window_max``),
summed from the recorded per-bin rate, the bench also backfills that record, every ``--interval`` over the data
(the value the rule records: the linear counters' exact rate), so the window reads the record's history a
Prometheus that ran the rules for that long holds. After the evaluations it runs each drift recording rule's
expression once as an instant query with ``stats=all`` and prints the samples it read and its evaluation time.

    PYTHONPATH=. python bench/drift_rules_scale.py --replicas 10 --features 10 --minutes 1445 --windows 1h,1d \
        --interval 1m --raw-window-max 1d   # before: the 1d window reads every raw sample
    PYTHONPATH=. python bench/drift_rules_scale.py --replicas 10 --features 10 --minutes 1445 --windows 1h,1d \
        --interval 1m                       # after: summed from the record

    PYTHONPATH=. python bench/drift_rules_scale.py --replicas 100 --features 20
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiwatch.drift.promql import BIN_RATE_RECORD
from aiwatch.rules import RulesConfig, render
from aiwatch.rules.render import duration_seconds
from tests.servers import Process, free_port, http_get, require_binary, running

BINS = 10
STEP = 30


def per_scrape(r: int, f: int, b: int) -> int:
    return 3 + (b + r + f) % 5


def write_openmetrics(path: Path, replicas: int, features: int, minutes: int, end: int,
                      rate_record: tuple[str, int] | None = None) -> int:
    """``rate_record``: the name and step (s) of the per-bin rate record to backfill too."""
    start = end - minutes * 60
    stamps = range(start, end + 1, STEP)
    n = 0
    with path.open("w") as out:
        def series(name: str, labels: str, values: list[float]) -> None:
            nonlocal n
            out.writelines(f"{name}{{{labels}}} {v} {t}\n" for t, v in zip(stamps, values, strict=True))
            n += 1

        def ident(r: int, f: int) -> str:
            return f'job="aiwatch",instance="r{r}",model="m",feature="f{f}"'

        out.write("# HELP aiwatch_feature_bin Values counted into each bin.\n# TYPE aiwatch_feature_bin counter\n")
        for r in range(replicas):
            for f in range(features):
                for b in range(BINS):
                    series("aiwatch_feature_bin_total", f'{ident(r, f)},bin="{b}",reference="ref1"',
                           [float(per_scrape(r, f, b) * i) for i in range(len(stamps))])
        out.write("# HELP aiwatch_feature_missing Missing values.\n# TYPE aiwatch_feature_missing counter\n")
        for r in range(replicas):
            for f in range(features):
                series("aiwatch_feature_missing_total", ident(r, f), [float(5 * i) for i in range(len(stamps))])
        out.write("# HELP aiwatch_feature_reference_ratio Reference share.\n"
                  "# TYPE aiwatch_feature_reference_ratio gauge\n")
        for r in range(replicas):
            for f in range(features):
                for b in range(BINS):
                    series("aiwatch_feature_reference_ratio", f'{ident(r, f)},bin="{b}",reference="ref1"',
                           [0.1] * len(stamps))
        out.write("# HELP aiwatch_feature_reference_missing_ratio Reference missing share.\n"
                  "# TYPE aiwatch_feature_reference_missing_ratio gauge\n")
        for r in range(replicas):
            for f in range(features):
                series("aiwatch_feature_reference_missing_ratio", ident(r, f), [0.02] * len(stamps))
        if rate_record:
            name, step = rate_record
            out.write(f"# HELP {name} Recorded.\n# TYPE {name} gauge\n")
            for f in range(features):
                for b in range(BINS):
                    value = sum(per_scrape(r, f, b) for r in range(replicas)) / STEP
                    labels = f'feature="f{f}",model="m",reference="ref1",bin="{b}"'
                    out.writelines(f"{name}{{{labels}}} {value} {t}\n" for t in range(start, end + 1, step))
                    n += 1
        out.write("# EOF\n")
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=100)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--minutes", type=int, default=70)
    parser.add_argument("--windows", default="1h")
    parser.add_argument("--interval", default="15s", help="evaluation interval of the drift groups")
    parser.add_argument("--raw-window-max", default=RulesConfig().drift.raw_window_max,
                        help="drift.raw_window_max: longer windows are summed from the recorded rate")
    parser.add_argument("--evaluations", type=int, default=3)
    parser.add_argument("--rules", type=Path, help="a directory of rule files to load instead of rendering them")
    args = parser.parse_args()

    cfg = RulesConfig()
    cfg.drift.interval = args.interval
    cfg.drift.windows = args.windows.split(",")
    cfg.drift.raw_window_max = args.raw_window_max
    cfg.validate()
    rate_record = None
    if cfg.drift.summed_windows():
        rate_record = (BIN_RATE_RECORD.format(window=cfg.drift.rate_window_or_default()),
                       round(duration_seconds(args.interval)))
    tmp = Path(tempfile.mkdtemp(prefix="aiwatch-drift-scale-"))
    end = int(time.time())
    t0 = time.monotonic()
    n = write_openmetrics(tmp / "data.om", args.replicas, args.features, args.minutes, end, rate_record)
    subprocess.run([require_binary("promtool"), "tsdb", "create-blocks-from", "openmetrics", str(tmp / "data.om"),
                    str(tmp / "data")], check=True, capture_output=True)
    (tmp / "data.om").unlink()
    print(f"{n} series, {args.minutes} min at {STEP} s backfilled in {time.monotonic() - t0:.0f} s", flush=True)

    rules_dir = tmp / "rules"
    rules_dir.mkdir()
    if args.rules:
        for f in args.rules.glob("*.yml"):
            (rules_dir / f.name).write_text(f.read_text())
    else:
        for name, text in render(cfg).items():
            (rules_dir / name).write_text(text)
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(f"global:\n  evaluation_interval: {args.interval}\nrule_files:\n"
                      + "".join(f"  - {p}\n" for p in sorted(rules_dir.glob("*.rules.yml"))))
    proc = Process([require_binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=30d"],
                   tmp / "prometheus.log")
    url = f"http://127.0.0.1:{port}"
    times: dict[tuple[str, str], list[float]] = defaultdict(list)
    seen: dict[tuple[str, str], str] = {}
    expected: set[tuple[str, str]] = set()  # every drift group and rule loaded, evaluated yet or not
    with running(proc, lambda: http_get(f"{url}/-/ready")[0] == 200, 120, "Prometheus"):
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            _, body = http_get(f"{url}/api/v1/rules")
            for group in json.loads(body)["data"]["groups"]:
                if "drift" not in group["name"]:
                    continue
                expected.add((group["name"], "(group)"))
                for rule in group["rules"]:
                    key = (group["name"], rule["name"])
                    expected.add(key)
                    stamp = rule.get("lastEvaluation", "")
                    if stamp.startswith("0001") or seen.get(key) == stamp:
                        continue
                    seen[key] = stamp
                    times[key].append(rule["evaluationTime"])
                    if rule.get("lastError"):
                        print(f"{rule['name']}: {rule['lastError']}", file=sys.stderr)
                key = (group["name"], "(group)")
                stamp = group.get("lastEvaluation", "")
                if not stamp.startswith("0001") and seen.get(key) != stamp:
                    seen[key] = stamp
                    times[key].append(group["evaluationTime"])
            # every group and rule, not only those evaluated yet (Prometheus staggers the groups' evaluations)
            if expected and all(len(times.get(key, ())) >= args.evaluations for key in expected):
                break
            time.sleep(1)
        counts, stats = {}, {}
        groups = json.loads(http_get(f"{url}/api/v1/rules")[1])["data"]["groups"]
        exprs = {rule["name"]: rule["query"] for group in groups for rule in group["rules"]}
        for (_group, name) in times:
            if name != "(group)" and not name.startswith("Aiwatch"):
                _, body = http_get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": f"count({name})"}))
                result = json.loads(body)["data"]["result"]
                counts[name] = result[0]["value"][1] if result else "0"
                _, body = http_get(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": exprs[name],
                                                                                     "stats": "all"}))
                data = json.loads(body)["data"]["stats"]
                stats[name] = (data["samples"]["totalQueryableSamples"], data["timings"]["evalTotalTime"])
    print(f"{args.replicas} replicas x {args.features} features x {BINS} bins, evaluation every {args.interval}")
    print(f"{'group / rule':<64} {'mean s':>8} {'series':>7} {'samples read':>13} {'query s':>8}")
    for (group, name), values in sorted(times.items()):
        samples, took = stats.get(name, ("", ""))
        print(f"{group + ' / ' + name:<64} {sum(values) / len(values):8.3f} {counts.get(name, ''):>7} "
              f"{samples:>13} {took if took == '' else format(took, '.3f'):>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
