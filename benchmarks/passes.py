"""Sum OpenVINO's transformation-pass timings: where a compile's time goes.

    OV_ENABLE_PROFILE_PASS=passes.csv \
        python -m benchmarks.step --fix on --graph-only
    python -m benchmarks.passes passes.csv [--top 15]

OpenVINO (release builds too) appends one line per pass manager and per
pass to the file named by ``OV_ENABLE_PROFILE_PASS`` while it compiles:
``m;<manager>;<ns>;...`` (a manager's time), ``m_start``/``m_end`` with
its clock readings in ns, and ``t;<pass>;<manager>;<ns>;...`` (a pass's
time).
Managers and passes nest (the CPU plugin's manager runs
CommonOptimizations, which runs MOC, ...), so their times overlap. This
tool reports the wall time of the outermost managers (the span in which
some transformation ran), and each pass's total over every time it ran,
which includes the passes it ran itself.
"""

import argparse
import collections
import csv

__all__ = ["main", "read", "render"]


def read(path):
    """{"transformations_s": wall seconds in outermost pass managers,
    "managers": [(name, seconds)] outermost, in order,
    "passes": {pass: seconds summed}}."""
    spans, open_spans = [], collections.defaultdict(list)
    passes = collections.Counter()
    with open(path, newline="") as handle:
        for row in csv.reader(handle, delimiter=";"):
            kind = row[0] if row else ""
            if kind == "m_start":
                open_spans[row[1]].append(int(row[2]))
            elif kind == "m_end" and open_spans[row[1]]:
                spans.append((open_spans[row[1]].pop(), int(row[2]), row[1]))
            elif kind == "t":
                passes[row[1]] += int(row[3]) / 1e9
    managers, end = [], None
    for start, stop, name in sorted(spans):
        if end is None or start >= end:  # not inside the one before
            managers.append((name, (stop - start) / 1e9))
            end = stop
    return {
        "transformations_s": sum(seconds for _, seconds in managers),
        "managers": managers,
        "passes": dict(passes.most_common()),
    }


def render(summary, top=15):
    totals = collections.Counter()
    for name, seconds in summary["managers"]:
        totals[name] += seconds
    lines = [
        f"transformations: {summary['transformations_s']:.2f} s in "
        f"{len(summary['managers'])} outermost pass managers",
        "",
        "| outermost manager | s |",
        "|---|---|",
    ]
    lines += [f"| {name} | {s:.2f} |" for name, s in totals.most_common()]
    lines += ["", "| pass (nested ones included) | s |", "|---|---|"]
    lines += [
        f"| {name} | {seconds:.2f} |"
        for name, seconds in list(summary["passes"].items())[:top]
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.passes")
    parser.add_argument("csv", help="the file OV_ENABLE_PROFILE_PASS named")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)
    print(render(read(args.csv), args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
