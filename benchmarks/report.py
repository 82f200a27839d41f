"""report.md and PNG charts from a results.json.

Every figure is the median over repeats, with [min-max] beside it; the
improvement table compares OpenVINO with and without the fix per model and
environment; the native table puts each Keras OpenVINO row beside each
native row (benchmarks/native) of the same weight format; the export table
genai on the package's export beside genai on optimum-intel's. Memory is
RSS and, where the runs recorded it, its anonymous part (only swap takes
it back: a user's out-of-memory) apart from its file part (mapped files'
pages, which the kernel can drop).
"""

import json
import pathlib
import re
import statistics

__all__ = ["render", "summarize"]

# (record field, column title, digits)
COLUMNS = [
    ("weight_mb", "weights MB", 0),
    ("load_mb", "load MB", 0),
    ("load_s", "load s", 2),
    ("compile_mb", "first-call growth MB", 0),
    ("growth_mb", "peak growth MB", 0),
    ("peak_rss_mb", "peak RSS MB", 0),
    ("peak_swap_mb", "peak swap MB", 0),
    ("anon_growth_mb", "peak anon growth MB", 0),
    ("peak_file_mb", "peak file MB", 0),
    ("first_s", "1st call s", 2),
    ("second_s", "2nd call s", 3),
    ("new_tokens", "new tokens", 0),
    ("tokens_per_s", "tokens/s", 1),
]
# Recorded since 2026-12-07 (benchmarks/sampler.py's anon and file): a
# table shows them only where some run recorded them, so that older
# results render as they did.
ANON_FILE_FIELDS = {"anon_growth_mb", "peak_file_mb"}
# Their fields and their titles (the ratio tables name a column by title).
ANON_FILE_KEYS = ANON_FILE_FIELDS | {
    title for field, title, _ in COLUMNS if field in ANON_FILE_FIELDS
}
# OpenVINO's first call in three parts (worker._split).
SPLIT_COLUMNS = [
    ("split_trace_s", "trace s", 2),
    ("split_compile_s", "compile s", 2),
    ("split_run_s", "first run s", 2),
    ("split_trace_mb", "trace MB", 0),
    ("split_compile_mb", "compile MB", 0),
    ("split_run_mb", "first run MB", 0),
]
# The native rows' export (once per run, not per repeat; native.export).
EXPORT_COLUMN = ("export_s", "export s", 1)
# Lower is better for all but tokens/s.
HIGHER_IS_BETTER = {"tokens_per_s"}
# Rates and durations, for which a speedup (x faster) is meaningful.
SPEED_FIELDS = {"first_s", "second_s", "tokens_per_s"}
# The native table's ratios, Keras over native: (title, a run's value).
NATIVE_RATIOS = [
    ("tokens/s", lambda run: run.get("tokens_per_s")),
    # Time to first token: the native pipelines compile while loading,
    # keras-hub in its first call, so only the sum compares.
    (
        "time to first token s (load + 1st call)",
        lambda run: (
            run["load_s"] + run["first_s"]
            if run.get("load_s") is not None and run.get("first_s") is not None
            else None
        ),
    ),
    ("peak growth MB", lambda run: run.get("growth_mb")),
    ("peak anon growth MB", lambda run: run.get("anon_growth_mb")),
]
NATIVE_BACKENDS = ("openvino-genai", "optimum-intel", "keras-export")
# The export table's ratios: the same as the native table's, and the
# exports' own time.
EXPORT_RATIOS = [
    ("export s", lambda run: run.get("export_s")),
    *NATIVE_RATIOS,
]


def summarize(runs):
    """{(model, label): {"runs": [...], field: (median, min, max)}}."""
    groups = {}
    for run in runs:
        key = (run["model"], run["label"])
        groups.setdefault(key, {"runs": []})["runs"].append(run)
    for group in groups.values():
        good = [run for run in group["runs"] if run["ok"]]
        group["failed"] = [run for run in group["runs"] if not run["ok"]]
        for field, _, _ in COLUMNS + SPLIT_COLUMNS + [EXPORT_COLUMN]:
            values = [run[field] for run in good if run.get(field) is not None]
            if values:
                group[field] = (
                    statistics.median(values),
                    min(values),
                    max(values),
                )
    return groups


def _cell(stat, digits):
    if stat is None:
        return "failed"
    median, low, high = stat
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def render(results_path, out=None, charts=True):
    """Write the report of ``results_path`` to ``out`` (default: report.md
    beside it), and with ``charts`` the PNG charts beside the report;
    return the report's path. The same results render the same Markdown."""
    results_path = pathlib.Path(results_path)
    results = json.loads(results_path.read_text())
    out = pathlib.Path(out) if out else results_path.parent / "report.md"
    out_dir = out.parent
    groups = summarize(results["runs"])
    lines = [
        "# keras-ov-einsum benchmark",
        "",
        f"- created {results['created']}, commit {results['commit']}",
        f"- command: `{results['command']}`",
        f"- machine: {_cpu(results['machine'])}, "
        f"{results['machine']['cores']} cores, "
        f"{results['machine']['ram_gb']} GB RAM; load average at start "
        f"{_loadavg(results['machine'].get('loadavg_at_start'))}, at end "
        f"{_loadavg(results['machine'].get('loadavg_at_end'))}",
        f"- {results['parameters']['repeats']} repeat(s), a fresh process "
        f"per run; {_workload_text(results['parameters'])}, greedy; median "
        "[min-max] over repeats",
        "- models built from their config with random weights (the same "
        "saved preset for every backend) and a tokenizer trained offline: "
        "the generated text is meaningless (GPT-2: ids beyond the trained "
        "vocabulary decode as `<|unusedN|>`)",
        "- weights = the backbone's variables as stored (a dtype policy's "
        "variable dtype; int8: quantized kernels, float32 rest); "
        "load = RSS after loading - after imports; first-call growth = "
        "after the first call - after loading (both after gc); peak growth "
        "= peak RSS - after imports (the original report's columns); new "
        "tokens exclude the prompt; tokens/s = new tokens / second call",
    ]
    if _anon_file_recorded(results["runs"]):
        lines.append(
            "- peak anon growth = the peak of RSS's anonymous part "
            "(RssAnon + RssShmem: memory only swap takes back, what runs a "
            "user out of memory) - after imports; peak file = the peak of "
            "its file part (RssFile: pages of mapped files, weights mapped "
            "from disk and libraries, which the kernel can drop and read "
            "again); the two peaks need not fall at the same instant"
        )
    lines.append("")
    for model in sorted({model for model, _ in groups}):
        lines += _model_tables(model, groups, results["runs"])
    failures = [run for run in results["runs"] if not run["ok"]]
    if failures:
        lines += ["## Failed runs", ""]
        lines += [
            f"- {run['model']} {run['label']} repeat {run['repeat']}: "
            f"{_one_line(run['error'])}"
            for run in failures
        ]
        lines.append("")
    if charts:
        drawn = _charts(out_dir, groups)
        if drawn is None:
            lines += ["No charts: matplotlib is not installed.", ""]
        elif drawn:
            lines += ["## Charts", ""]
            lines += [f"![{name}]({name})" for name in drawn]
    out.write_text("\n".join(lines) + "\n")
    return out


def _workload_text(parameters):
    """What each run generates: --max-length's one prompt (all results
    before --new-tokens and --batch), or the rows' new tokens and
    batches."""
    new_tokens = parameters.get("new_tokens")
    batches = parameters.get("batch") or [1]
    if new_tokens:
        text = (
            "`generate(prompt, max_length=prompt length + N, "
            "stop_token_ids=None)`, N new tokens: "
            + ", ".join(str(count) for count in new_tokens)
            + " (the native rows: N)"
        )
    else:
        text = f'`generate("Hello", max_length={parameters["max_length"]})`'
    if parameters.get("warm"):
        text += (
            "; warm cache: a second process, each side with its "
            "compiled-model cache filled by a run not timed (Keras + fix: "
            "the compiled_cache part; the native rows: OpenVINO's CACHE_DIR)"
        )
    if batches == [1]:
        return text
    return text + (
        "; batch B: the first B of benchmarks/models.py's fixed prompts "
        "(B = " + ", ".join(str(batch) for batch in batches) + ") in one "
        "call, ragged: each Keras row generates up to the longest prompt's "
        "length + N, the native rows N a row on the same token ids, "
        "left-padded; new tokens and tokens/s count N of every row (what "
        "both make; a Keras row's tokens past them are the price of its "
        "padding, in its time, not its count), and same token ids "
        "compares them row by row"
    )


def _anon_file_recorded(runs):
    """Whether any run recorded RSS's anon and file parts."""
    return any(
        run.get(field) is not None for run in runs for field in ANON_FILE_FIELDS
    )


def _shown(columns, runs):
    """``columns`` (COLUMNS' (field, title, digits) or the ratios' (title,
    value)) without the anon and file ones where no run in ``runs``
    recorded them."""
    if _anon_file_recorded(runs):
        return columns
    return [column for column in columns if column[0] not in ANON_FILE_KEYS]


def _one_line(text, limit=1000):
    """An error as one Markdown list item: no ANSI colours, no newlines."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _cpu(machine):
    """The CPU's name and the instruction sets that decide what the CPU
    plugin runs (recorded since 2026-12-01)."""
    flags = machine.get("cpu_flags")
    if flags is None:
        return machine["cpu"]
    return f"{machine['cpu']} ({', '.join(flags) or 'no AVX2'})"


def _loadavg(values):
    return "?" if not values else "/".join(f"{v:.2f}" for v in values)


def _header(titles):
    return [
        "| configuration | " + " | ".join(titles) + " |",
        "|---" * (len(titles) + 1) + "|",
    ]


def _stat_cells(group, columns):
    """median [min-max] per field; a field that runs of an older harness
    did not record: n/a."""
    recorded = any(run["ok"] for run in group["runs"])
    return [
        "n/a"
        if recorded and field not in group
        else _cell(group.get(field), digits)
        for field, _, digits in columns
    ]


def _model_tables(model, groups, runs):
    labels = [label for m, label in groups if m == model]
    columns = _shown(
        COLUMNS,
        [run for label in labels for run in groups[(model, label)]["runs"]],
    )
    titles = [title for _, title, _ in columns]
    lines = [f"## {model}", ""]
    # Runs of an older harness did not read the files first: no column.
    warmed = any(
        run.get("warmed_s") is not None
        for label in labels
        for run in groups[(model, label)]["runs"]
    )
    # Runs of an older harness did not time the exports: no column.
    exported = any(
        run.get("export_s") is not None
        for label in labels
        for run in groups[(model, label)]["runs"]
    )
    machine = ["load average", "CPU busy %"]
    lines += _header(
        titles
        + [EXPORT_COLUMN[1]] * exported
        + machine
        + ["files read s"] * warmed
    )
    for label in labels:
        group = groups[(model, label)]
        cells = _stat_cells(group, columns)
        if exported:  # blank for the rows that run no export
            cells.append(
                _cell(group[EXPORT_COLUMN[0]], EXPORT_COLUMN[2])
                if EXPORT_COLUMN[0] in group
                else ""
            )
        cells.append(_machine_load(group["runs"], "loadavg_before", 1))
        cells.append(_machine_load(group["runs"], "cpu_busy_before", 0))
        if warmed:
            cells.append(_machine_load(group["runs"], "warmed_s", 2))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "load average and CPU busy: the machine's 1-minute load and how "
        "busy its CPUs were in the second before each run. Other work "
        "sharing the CPUs inflates the timings, not the memory figures.",
    ]
    if exported:
        lines.append(
            "export s: the native row's export, made once (not per repeat) "
            "in a fresh process, imports included: optimum-cli's from the "
            "Hugging Face checkpoint (no tokenizers), keras-export's "
            "`python -m keras_ov_einsum.export` from the preset (tokenizer "
            "IRs included); a cached export keeps the time it took when "
            "made (--fresh-exports makes it again)."
        )
    if warmed:
        lines.append(
            "files read s: the harness reads the row's model files (preset "
            "or IR) once before each run, untimed, so that every run starts "
            "with them in the OS page cache; a long read means they had "
            "been evicted."
        )
    lines.append("")
    lines += _improvement(model, groups)
    lines += _native_comparison(model, groups)
    lines += _export_comparison(model, groups)
    lines += targets(model, groups)
    lines += _first_call_split(model, groups)
    lines += _graphs(model, runs)
    lines += _versions(model, runs)
    return lines


def _machine_load(runs, field, digits):
    loads = [run[field] for run in runs if run.get(field) is not None]
    # loadavg is a (1, 5, 15)-minute triple: the 1-minute figure
    loads = [
        load[0] if isinstance(load, (list, tuple)) else load for load in loads
    ]
    if not loads:
        return "?"
    return _cell((statistics.median(loads), min(loads), max(loads)), digits)


def _versions(model, runs):
    rows = {}
    for run in runs:
        if run["model"] == model and run.get("versions"):
            rows.setdefault(run["label"], run["versions"])
    if not rows:
        return []
    names = ["python", "keras", "keras-hub", "openvino", "numpy"]
    lines = [
        "### Software per configuration",
        "",
        "| configuration | " + " | ".join(names) + " | backend |",
        "|---" * (len(names) + 2) + "|",
    ]
    for label, versions in rows.items():
        backend = ", ".join(
            f"{name} {version}"
            for name, version in versions.items()
            if name not in names
        )
        lines.append(
            f"| {label} | "
            + " | ".join(str(versions.get(name)) for name in names)
            + f" | {backend} |"
        )
    return lines + [""]


def _improvement(model, groups):
    pairs = []
    for m, label in groups:
        stock = _stock_label(groups[(m, label)]["runs"][0])
        if m == model and stock and stock != label and (model, stock) in groups:
            pairs.append((stock, label))
    lines = []
    for stock_label, fix_label in pairs:
        stock, fix = groups[(model, stock_label)], groups[(model, fix_label)]
        if not any(f in stock and f in fix for f, _, _ in COLUMNS):
            continue  # one side failed every repeat: nothing to compare
        lines += [
            f"### {fix_label} vs stock",
            "",
            "median [min-max] over repeats; delta and change compare the "
            "medians; speedup: how many times faster the fix is, median to "
            "median and best run to best run (on a shared machine the best "
            "run is the one least slowed by others)",
            "",
            "| metric | stock | with fix | delta | change | speedup "
            "| best-run speedup |",
            "|---|---|---|---|---|---|---|",
        ]
        for field, title, digits in COLUMNS:
            if field == "new_tokens" or field not in stock or field not in fix:
                continue
            before, after = stock[field][0], fix[field][0]
            # + 0.0 turns the -0.0 of equal medians into 0.0
            delta = round(after - before, digits) + 0.0
            change = f"{delta / before * 100:+.1f}%" if before else "n/a"
            speedup = best_speedup = ""
            if field in SPEED_FIELDS:
                speedup = _speedup(field, before, after)
                best = 2 if field in HIGHER_IS_BETTER else 1  # max or min
                best_speedup = _speedup(
                    field, stock[field][best], fix[field][best]
                )
            lines.append(
                f"| {title} | {_cell(stock[field], digits)} | "
                f"{_cell(fix[field], digits)} | {delta:+.{digits}f} | "
                f"{change} | {speedup} | {best_speedup} |"
            )
        lines.append("")
    return lines


def _stock_label(run):
    """The label of the run's configuration without the fix (results from
    before "stock_label" was recorded: "... fix" -> "... stock")."""
    if "stock_label" in run:
        return run["stock_label"]
    label = run["label"]
    return label[: -len(" fix")] + " stock" if label.endswith(" fix") else None


def _speedup(field, stock, fix):
    """How many times faster with the fix: x1.25 = 25% faster."""
    if not stock or not fix:
        return ""
    ratio = fix / stock if field in HIGHER_IS_BETTER else stock / fix
    return f"x{ratio:.2f}"


def _native_comparison(model, groups):
    """Each Keras OpenVINO row beside each native row of its weight format:
    Keras over native, the ratio of the medians with [min-max] of the
    ratios of runs of the same repeat, and whether their token ids match."""
    keras_rows, native_rows = [], []
    for m, label in groups:
        runs = groups[(m, label)]["runs"]
        if m != model:
            continue
        if runs[0]["backend"] == "openvino":
            keras_rows.append(label)
        elif runs[0]["backend"] in NATIVE_BACKENDS:
            native_rows.append(label)
    pairs = [
        (keras_label, native_label)
        for native_label in native_rows
        for keras_label in keras_rows
        if _dtype(groups[(model, keras_label)])
        == _dtype(groups[(model, native_label)])
        and _workload(groups[(model, keras_label)])
        == _workload(groups[(model, native_label)])
    ]
    if not pairs:
        return []
    ratios = _shown(NATIVE_RATIOS, _runs(groups, model, pairs))
    titles = [title for title, _ in ratios]
    heading = [
        "### Keras vs native OpenVINO",
        "",
        "Keras over native: tokens/s below 1 = Keras is slower, time and "
        "memory above 1 = Keras takes more. The ratio of the medians, "
        "[min-max] of the ratios run to run within a repeat; the medians "
        "(Keras / native) after it. Same token ids: the Keras row's "
        "generated ids equal the native row's in every run (same weights, "
        "greedy).",
        "",
        "| Keras row | native row | "
        + " | ".join(titles)
        + " | same token ids |",
    ]
    rows = {label: groups[(model, label)] for pair in pairs for label in pair}
    return heading + _pair_rows(pairs, rows, ratios)


def _export_comparison(model, groups):
    """Each keras-export row beside the openvino-genai row of its weight
    format, hint and device: genai on the package's export over genai on
    optimum-intel's, and whether their token ids match."""
    rows = {
        label: groups[(m, label)]
        for m, label in groups
        if m == model
        and groups[(m, label)]["runs"][0]["backend"]
        in ("openvino-genai", "keras-export")
    }

    def setting(group):
        run = group["runs"][0]
        return (
            _dtype(group),
            run.get("hint"),
            run.get("device", "CPU"),
            _workload(group),
        )

    pairs = [
        (keras_label, genai_label)
        for keras_label, keras in rows.items()
        if keras["runs"][0]["backend"] == "keras-export"
        for genai_label, genai in rows.items()
        if genai["runs"][0]["backend"] == "openvino-genai"
        and setting(genai) == setting(keras)
    ]
    if not pairs:
        return []
    ratios = _shown(EXPORT_RATIOS, _runs(groups, model, pairs))
    titles = [title for title, _ in ratios]
    heading = [
        "### openvino-genai on the Keras export vs on optimum-intel's",
        "",
        "keras-export (genai on `python -m keras_ov_einsum.export`'s IR) "
        "over openvino-genai on optimum-cli's IR of the same weights, same "
        "weight format, hint and device: above 1 = the Keras export takes "
        "more (tokens/s: is faster). Ratios as in the native table; export "
        "s as in the first table. Same token ids: the two rows' generated "
        "ids are equal in every run.",
        "",
        "| keras-export row | genai row | "
        + " | ".join(titles)
        + " | same token ids |",
    ]
    return heading + _pair_rows(pairs, rows, ratios)


def _pair_rows(pairs, rows, ratios):
    """A comparison table's separator and rows: for each (left, right)
    label pair, left over right in each of ``ratios`` and whether their
    token ids match; ``rows``: {label: group}."""
    lines = ["|---" * (len(ratios) + 3) + "|"]
    for left_label, right_label in pairs:
        left, right = rows[left_label]["runs"], rows[right_label]["runs"]
        cells = [_ratio_cell(left, right, value) for _, value in ratios]
        cells.append(_same_ids(left, right))
        lines.append(
            f"| {left_label} | {right_label} | " + " | ".join(cells) + " |"
        )
    return lines + [""]


# Issue 41's targets, each Keras row with the fix over openvino-genai's of
# the same weight format and workload (ratio of the medians): (column,
# NATIVE_RATIOS title, bound, direction).
TARGETS = [
    ("tokens/s", "tokens/s", 1.0, "at least"),
    (
        "time to first token",
        "time to first token s (load + 1st call)",
        1.0,
        "at most",
    ),
    ("peak RSS growth", "peak growth MB", 1.0, "at most"),
    ("peak anon growth", "peak anon growth MB", 1.0, "at most"),
]
# And the floor: a float32 row's anonymous memory over its weights' bytes
# (what the process holds beyond reclaimable page cache).
FLOOR = ("float32", 1.3)
# The native row a Keras row of each dtype is held against: its hint.
# Keras compiles float16 models with the f16 hint, which the plugin
# follows only where the CPU has float16 units; the native pipeline's
# counterpart is its default hint.
_TARGET_HINTS = {"float16": "default"}


def targets(model, groups):
    """The targets table: each Keras row with parts of the fix on beside
    openvino-genai's row of its weight format (f32 hint; float16: the
    default hint), Keras over native (ratio of the medians) against each
    target, met or by how much not."""
    native = {
        (_dtype(group), _workload(group)): group
        for (m, _), group in groups.items()
        if m == model
        and group["runs"][0]["backend"] == "openvino-genai"
        and group["runs"][0].get("hint", "f32")
        == _TARGET_HINTS.get(_dtype(group), "f32")
    }
    fixed = [
        (label, group)
        for (m, label), group in groups.items()
        if m == model
        and group["runs"][0]["backend"] == "openvino"
        and group["runs"][0].get("fix", "off") != "off"
        and (_dtype(group), _workload(group)) in native
    ]
    if not fixed:
        return []
    lines = [
        "### Targets: Keras + fix over openvino-genai",
        "",
        "Keras over openvino-genai with the f32 hint (float16: the default "
        "hint), same weight format and workload; ratio of the medians. "
        f"Anon growth / weights: the Keras row's peak anon growth over its "
        f"weights' bytes, at most {FLOOR[1]} in {FLOOR[0]}.",
        "",
        "| Keras row | "
        + " | ".join(title for title, *_ in TARGETS)
        + " | anon growth / weights |",
        "|---" * (len(TARGETS) + 2) + "|",
    ]
    values = dict(NATIVE_RATIOS)
    for label, group in fixed:
        genai = native[(_dtype(group), _workload(group))]
        cells = []
        for _, ratio_title, bound, direction in TARGETS:
            ratio = _median_ratio(
                group["runs"], genai["runs"], values[ratio_title]
            )
            cells.append(_verdict(ratio, bound, direction))
        if _dtype(group) == FLOOR[0]:
            floor = _anon_over_weights(group["runs"])
            cells.append(_verdict(floor, FLOOR[1], "at most"))
        else:
            cells.append("-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _verdict(ratio, bound, direction):
    if ratio is None:
        return "n/a"
    met = ratio >= bound if direction == "at least" else ratio <= bound
    verdict = "met" if met else "missed"
    # A third decimal where two would read as the bound itself (0.995
    # against 1.0: missed, not "1.00 ... missed").
    digits = 3 if f"{ratio:.2f}" == f"{bound:.2f}" else 2
    return f"{ratio:.{digits}f} ({direction} {bound}: {verdict})"


def _anon_over_weights(runs):
    """The median of the runs' peak anon growth over their weights' MB;
    None where not recorded (results before the anon/file split)."""
    ratios = [
        run["anon_growth_mb"] / run["weight_mb"]
        for run in runs
        if run["ok"] and run.get("anon_growth_mb") and run.get("weight_mb")
    ]
    return statistics.median(ratios) if ratios else None


def _runs(groups, model, pairs):
    """The runs of the rows that ``pairs`` of labels name."""
    labels = {label for pair in pairs for label in pair}
    return [run for label in labels for run in groups[(model, label)]["runs"]]


def _median_ratio(keras_runs, native_runs, value):
    def median(runs):
        got = [value(run) for run in runs if run["ok"]]
        got = [item for item in got if item is not None]
        return statistics.median(got) if got else None

    keras, native = median(keras_runs), median(native_runs)
    if keras is None or not native:
        return None
    return keras / native


def _dtype(group):
    return group["runs"][0].get("dtype", "float32")


def _workload(group):
    """(new tokens asked for, batch, warm): None for --max-length's, 1 for
    one prompt, False for a cold start (all results before --new-tokens,
    --batch and --cache)."""
    run = group["runs"][0]
    return (
        run.get("requested_new_tokens"),
        run.get("batch", 1),
        run.get("warm", False),
    )


def _ratio_cell(keras_runs, native_runs, value):
    """median(Keras) / median(native) [min-max of the per-repeat ratios]
    (Keras median / native median)."""

    def values(runs):
        return {
            run["repeat"]: value(run)
            for run in runs
            if run["ok"] and value(run) is not None
        }

    keras, native = values(keras_runs), values(native_runs)
    if not keras or not native:
        return "n/a"
    keras_median = statistics.median(keras.values())
    native_median = statistics.median(native.values())
    if not native_median:
        return "n/a"
    cell = f"{keras_median / native_median:.2f}"
    ratios = [
        keras[repeat] / native[repeat]
        for repeat in keras
        if repeat in native and native[repeat]
    ]
    if len(ratios) > 1:
        cell += f" [{min(ratios):.2f}-{max(ratios):.2f}]"
    return f"{cell} ({_short(keras_median)} / {_short(native_median)})"


def _short(value):
    """Three significant digits, without an exponent for large values."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _same_ids(keras_runs, native_runs):
    """yes, no (where the first difference is), or n/a (not recorded)."""
    keras = [
        run["generated_ids"] for run in keras_runs if run.get("generated_ids")
    ]
    native = [
        run["generated_ids"] for run in native_runs if run.get("generated_ids")
    ]
    if not keras or not native:
        return "n/a"
    different = [(k, n) for k in keras for n in native if k != n]
    if not different:
        return "yes"
    k, n = different[0]
    where = ""
    if isinstance(k[0], list):  # a batch: a list of ids a row
        row = _first_difference(k, n)
        where = f"row {row}, "
        k, n = (k[row], n[row]) if row < min(len(k), len(n)) else ([], [])
    pairs = len(keras) * len(native)
    return (
        f"no ({len(different)}/{pairs} run pairs differ; first at "
        f"{where}new token {_first_difference(k, n)})"
    )


def _first_difference(left, right):
    """The first index where two lists differ (or the shorter's length)."""
    return next(
        (i for i, (a, b) in enumerate(zip(left, right)) if a != b),
        min(len(left), len(right)),
    )


def _first_call_split(model, groups):
    labels = [
        label
        for m, label in groups
        if m == model and SPLIT_COLUMNS[0][0] in groups[(m, label)]
    ]
    if not labels:
        return []
    lines = [
        "### OpenVINO's first call, split",
        "",
        "trace: keras-hub runs generate() symbolically into an ov.Model; "
        "compile: OpenVINO compiles it; first run: the first inference, "
        "where the CPU plugin packs its weights. MB: RSS growth over each "
        "part (trace and compile sampled without a gc). median [min-max]",
        "",
    ]
    lines += _header([title for _, title, _ in SPLIT_COLUMNS])
    for label in labels:
        cells = _stat_cells(groups[(model, label)], SPLIT_COLUMNS)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def _graphs(model, runs):
    rows = {}
    for run in runs:
        if run["model"] == model and run["ok"] and run.get("graph"):
            row = dict(run["graph"])
            decisions = run.get("decisions") or {}
            row["calls lowered/stock"] = (
                f"{decisions['lowered']}/{decisions['declined']}"
                if decisions
                else "(fix off)"
            )
            row["Converts not built"] = (
                sum(decisions.get("counts", {}).values()) if decisions else 0
            )
            rows.setdefault(run["label"], row)
    if not rows:
        return []
    fields = [
        "Einsum",
        "MatMul",
        "FullyConnected",
        "Transpose",
        "Broadcast",
        "Reorder",
        "constant_mb",
        "calls lowered/stock",
        "Converts not built",
    ]
    lines = [
        "### OpenVINO runtime model (first repeat)",
        "",
        "Layers of the compiled model (`get_runtime_model()`) by runtime "
        "layer type, and the MB of its Const layers: the top-level graph "
        "(the prompt pass); the decoding loop is one TensorIterator there, "
        "whose body the runtime model does not list. Last column: patched "
        "calls (einsums, tied-embedding matmuls, slice_update writes, query "
        "scalings) the fix lowered / left stock, and the Converts of an "
        "operand to its own type the align_types part did not build.",
        "",
        "| configuration | " + " | ".join(fields) + " |",
        "|---" * (len(fields) + 1) + "|",
    ]
    for label, graph in rows.items():
        lines.append(
            f"| {label} | "
            + " | ".join(str(graph.get(f, "")) for f in fields)
            + " |"
        )
    return lines + [""]


def _charts(out_dir, groups):
    """The chart files written (None: matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = []
    keys = [key for key in groups if "peak_rss_mb" in groups[key]]
    if not keys:
        return []
    models = sorted({model for model, _ in keys})
    # One model: its name goes in the titles, not under every bar.
    labels = [
        _wrap(label if len(models) == 1 else f"{model} {label}")
        for model, label in keys
    ]
    subject = models[0] if len(models) == 1 else ", ".join(models)
    for field, title, filename, digits in [
        ("peak_rss_mb", "peak RSS (MB)", "peak_rss.png", 0),
        ("tokens_per_s", "second call tokens/s", "tokens_per_s.png", 1),
    ]:
        figure, axes = plt.subplots(figsize=(max(6, 1.5 * len(keys)), 4.5))
        medians = [groups[key][field][0] for key in keys]
        errors = [
            [groups[key][field][0] - groups[key][field][1] for key in keys],
            [groups[key][field][2] - groups[key][field][0] for key in keys],
        ]
        bars = axes.bar(range(len(keys)), medians, yerr=errors, capsize=4)
        axes.bar_label(bars, fmt=f"%.{digits}f", fontsize=8, padding=2)
        axes.set_xticks(range(len(keys)), labels, fontsize=8)
        axes.set_ylabel(title)
        axes.set_title(
            f"{subject}: {title}\nmedian over repeats, min-max whiskers",
            fontsize=10,
        )
        figure.tight_layout()
        figure.savefig(out_dir / filename, dpi=100)
        plt.close(figure)
        names.append(filename)
    figure, axes = plt.subplots(figsize=(10, 5.5))
    for key, label in zip(keys, labels):
        run = next(run for run in groups[key]["runs"] if run["ok"])
        times, rss = zip(*run["timeline"])
        (line,) = axes.plot(
            times, rss, label=label.replace("\n", " "), linewidth=1
        )
        # Stages 0-5 (start, imported, loaded, first call, second call,
        # deleted) as dots on the line, to read the phases off the curve.
        stages = run.get("stages", [])
        axes.plot(
            [stage["t"] for stage in stages],
            [stage["rss_mb"] for stage in stages],
            "o",
            color=line.get_color(),
            markersize=3,
        )
    axes.set_xlabel("seconds since process start")
    axes.set_ylabel("RSS (MB)")
    axes.set_title(
        f"{subject}: RSS every 20 ms, first good repeat of each "
        "configuration\ndots: stages 0-5 (start, imported, loaded, first "
        "call, second call, deleted)",
        fontsize=10,
    )
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out_dir / "memory_timeline.png", dpi=100)
    plt.close(figure)
    names.append("memory_timeline.png")
    return names


def _wrap(label):
    """'openvino 2025.3.0 stock' -> two lines, so bar labels do not touch."""
    words = label.split()
    if len(words) < 3:
        return label
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) + "\n" + " ".join(words[half:])
