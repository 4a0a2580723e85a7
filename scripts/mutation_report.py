"""Kill rate per module of the last mutmut run (scripts/mutation.sh), from mutmut's own result files.

    python scripts/mutation_report.py [--equivalent scripts/mutation_equivalent.txt]

Reads ``mutants/**/*.py.meta`` (the exit code of every mutant's test run) and prints, per mutated module: mutants,
killed (tests failed, timed out or crashed), survived, with no covering test, not run yet, and the kill rate over
the mutants that ran. Survivors listed in the equivalent file (one mutant name a line, ``#`` comments) are judged
equivalent to the original code and reported apart: the adjusted rate leaves them out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 152, 255, -11, -9, 37}  # failed, timed out, crashed or caught by the type check
SURVIVED, NO_TESTS = {0}, {5, 33}


def load(root: Path) -> dict[str, dict[str, int | None]]:
    """module -> mutant name -> exit code (None: not run)."""
    out: dict[str, dict[str, int | None]] = defaultdict(dict)
    for meta in sorted(root.rglob("*.py.meta")):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        for name, code in codes.items():
            module = name.split(".x")[0] if ".x" in name else name.rsplit(".", 1)[0]
            out[module][name] = code
    return out


def equivalent_names(path: Path | None) -> set[str]:
    if path is None or not path.exists():
        return set()
    return {line.split("#")[0].strip() for line in path.read_text().splitlines() if line.split("#")[0].strip()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=Path("mutants"))
    parser.add_argument("--equivalent", type=Path, default=Path(__file__).with_name("mutation_equivalent.txt"))
    parser.add_argument("--survivors", action="store_true", help="list the survivors not judged equivalent")
    args = parser.parse_args(argv)
    results = load(args.mutants)
    if not results:
        print(f"no mutmut results under {args.mutants}: run scripts/mutation.sh first", file=sys.stderr)
        return 2
    equivalent = equivalent_names(args.equivalent)
    print(f"{'module':<28}{'mutants':>8}{'killed':>8}{'survived':>9}{'equiv.':>7}{'no test':>8}{'not run':>8}"
          f"{'kill rate':>10}{'adjusted':>9}")
    totals: Counter[str] = Counter()
    open_survivors = []
    for module, codes in sorted(results.items()):
        c: Counter[str] = Counter()
        for name, code in codes.items():
            if code is None:
                c["not run"] += 1
            elif code in KILLED:
                c["killed"] += 1
            elif code in SURVIVED or code in NO_TESTS:
                kind = "survived" if code in SURVIVED else "no test"
                c[kind] += 1
                if name in equivalent:
                    c["equivalent"] += 1
                else:
                    open_survivors.append(name)
            else:
                c["other"] += 1
        ran = c["killed"] + c["survived"] + c["no test"] + c["other"]
        rate = c["killed"] / ran if ran else float("nan")
        adjusted = c["killed"] / (ran - c["equivalent"]) if ran - c["equivalent"] else float("nan")
        print(f"{module:<28}{len(codes):>8}{c['killed']:>8}{c['survived']:>9}{c['equivalent']:>7}{c['no test']:>8}"
              f"{c['not run']:>8}{rate:>10.1%}{adjusted:>9.1%}")
        totals.update(c)
        totals["mutants"] += len(codes)
    ran = totals["killed"] + totals["survived"] + totals["no test"] + totals["other"]
    print(f"{'all':<28}{totals['mutants']:>8}{totals['killed']:>8}{totals['survived']:>9}{totals['equivalent']:>7}"
          f"{totals['no test']:>8}{totals['not run']:>8}{totals['killed'] / max(ran, 1):>10.1%}"
          f"{totals['killed'] / max(ran - totals['equivalent'], 1):>9.1%}")
    if args.survivors:
        print("\nsurvivors not judged equivalent:")
        for name in open_survivors:
            print(f"  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
