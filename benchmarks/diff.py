"""Compare two results.json files; flag medians that moved beyond a factor."""

import json

from benchmarks.report import COLUMNS, HIGHER_IS_BETTER, summarize

__all__ = ["compare_results"]


def compare_results(old_path, new_path, factor):
    """Return (lines, number of regressions) comparing matching groups."""
    old = summarize(json.load(open(old_path))["runs"])
    new = summarize(json.load(open(new_path))["runs"])
    lines, regressions = [], 0
    for key in sorted(set(old) & set(new)):
        for field, title, digits in COLUMNS:
            if (
                field == "new_tokens"
                or field not in old[key]
                or field not in new[key]
            ):
                continue
            before, after = old[key][field][0], new[key][field][0]
            if not before or not after:
                continue
            ratio = after / before
            worse = (
                ratio < 1 / factor
                if field in HIGHER_IS_BETTER
                else ratio > factor
            )
            better = (
                ratio > factor
                if field in HIGHER_IS_BETTER
                else ratio < 1 / factor
            )
            flag = "REGRESSION" if worse else "improved" if better else ""
            regressions += worse
            if flag:
                lines.append(
                    f"{flag:10s} {key[0]} {key[1]}: {title} "
                    f"{before:.{digits}f} -> {after:.{digits}f} (x{ratio:.2f})"
                )
    only = sorted(set(old) ^ set(new))
    lines += [f"only in one file: {model} {label}" for model, label in only]
    if not lines:
        lines.append(f"no change beyond x{factor}")
    return lines, regressions
