"""``python -m benchmarks compare|report|diff``."""

import argparse
import datetime
import sys

from benchmarks import diff, environments, models, native, report, runner
from keras_ov_einsum.core.registry import default_switches

__all__ = ["main"]

BACKENDS = ("tensorflow", "torch", "jax", "openvino")
# Not Keras: the same weights exported to an OpenVINO IR (benchmarks/native).
NATIVE_BACKENDS = native.BACKENDS


def _list(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _counts(text):
    """A comma-separated list of positive integers."""
    counts = []
    for item in _list(text):
        try:
            count = int(item)
        except ValueError:
            count = 0
        if count < 1:
            raise argparse.ArgumentTypeError(
                f"{item!r} is not a positive integer"
            )
        counts.append(count)
    if not counts:
        raise argparse.ArgumentTypeError("no number given")
    return list(dict.fromkeys(counts))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare", help="measure backends with and without the fix"
    )
    compare.add_argument(
        "--model",
        default=None,
        help=f"one of {', '.join(models.MODELS)} (or a "
        "comma-separated list); default gpt2_medium",
    )
    compare.add_argument(
        "--backends",
        type=_list,
        default=list(BACKENDS),
        help=f"comma-separated, from {','.join(BACKENDS)} (Keras; default: "
        f"all of these) and {','.join(NATIVE_BACKENDS)} (native rows: the "
        "preset's weights exported by optimum-intel, run without Keras by "
        "genai and optimum-intel; keras-export: genai on the package's "
        "export of the preset; float32, float16 and int8: neither exports "
        "bfloat16)",
    )
    compare.add_argument(
        "--native-hint",
        type=_list,
        default=["f32"],
        help="for the native rows, comma-separated INFERENCE_PRECISION_HINT: "
        "f32 (the Keras rows' precision; the default) and/or default (the "
        "plugin's own choice, bf16 on CPUs that have it): each is a row",
    )
    compare.add_argument(
        "--device",
        default="CPU",
        help="OpenVINO device of the native rows (default CPU; e.g. GPU); "
        "a device the machine lacks gives failed runs that say so",
    )
    compare.add_argument(
        "--fix",
        type=_list,
        default=["both"],
        help="for openvino, comma-separated: off (stock), on (every default "
        "part), both (= off,on; the default), a default part alone ("
        + ", ".join(name for name, on in default_switches().items() if on)
        + "), no_<part> (every default part but it), auto (on, with the "
        "opt-in part a weight format needs: int8 for int8 and int8_weights, "
        "int4 for int4), or an opt-in part on top of on ("
        + ", ".join(name for name, on in default_switches().items() if not on)
        + ")",
    )
    compare.add_argument(
        "--dtype",
        type=_list,
        default=["float32"],
        help=f"weight formats, comma-separated, from {','.join(runner.DTYPES)}"
        " (int8, float16, int8_weights, int4: the preset saved in that "
        "format, "
        "once; int8_weights is quantized weights-only, which stock "
        "keras-hub cannot load: its row quantizes the float32 preset while "
        "loading)",
    )
    compare.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="fresh processes per configuration (default 3; --quick: 1)",
    )
    compare.add_argument(
        "--environments",
        type=_list,
        default=None,
        help="the stacks the openvino rows run in, comma-separated, from "
        f"{', '.join(environments.KNOWN_GOOD)} (default "
        f"{environments.CURRENT}, this venv; the others: ./run.sh stack "
        "NAME's venv, built on first use); with more than one, each row's "
        "label names its stack",
    )
    compare.add_argument(
        "--openvino",
        type=_list,
        default=None,
        help="OpenVINO version(s), for --environments: the stack with that "
        "version (this venv's where it has it)",
    )
    compare.add_argument(
        "--out",
        default=None,
        help="output folder (default results/<date-time>)",
    )
    compare.add_argument(
        "--max-length",
        type=int,
        default=10,
        help='without --new-tokens: generate("Hello", max_length=...), the '
        "native rows as many new tokens; default 10 as in the report",
    )
    compare.add_argument(
        "--new-tokens",
        type=_counts,
        default=None,
        help="new tokens generated after the prompt (after the longest "
        "prompt of a batch), comma-separated, each its own rows: the Keras "
        "rows generate(max_length=prompt length + N, stop_token_ids=None), "
        "the native rows N; instead of --max-length",
    )
    compare.add_argument(
        "--batch",
        type=_counts,
        default=[1],
        help="prompts generated in one call, comma-separated, each its own "
        f"rows: the first N of {len(models.PROMPTS)} fixed prompts of "
        "different lengths (benchmarks/models.py's PROMPTS), the native rows "
        "on the same token ids left-padded; tokens/s counts N new tokens "
        "of every row (a Keras row of a shorter prompt makes more: in its "
        'time, not its count); default 1 ("Hello")',
    )
    compare.add_argument(
        "--cache",
        type=_list,
        default=["cold"],
        help="cold (the default: every process traces and compiles) and/or "
        "warm (each its own rows: a second process with each side's "
        "compiled-model cache, filled by a run not timed: the fix with the "
        "compiled_cache part, the native rows with OpenVINO's CACHE_DIR; "
        "stock has none, so no warm row)",
    )
    compare.add_argument(
        "--timeout", type=float, default=1200, help="seconds per run"
    )
    compare.add_argument(
        "--quiet-below",
        type=float,
        default=None,
        metavar="PERCENT",
        help="on a shared machine: before each run, wait until the CPU is "
        "less busy than this (at most --quiet-wait seconds)",
    )
    compare.add_argument(
        "--quiet-wait",
        type=float,
        default=120,
        help="seconds --quiet-below waits at most before running anyway",
    )
    compare.add_argument(
        "--fresh-exports",
        action="store_true",
        help="export the native rows' models again, and time it, rather "
        "than reuse exports cached by an earlier run",
    )
    compare.add_argument(
        "--quick",
        action="store_true",
        help="GPT-2 base, one repeat: a few minutes",
    )

    render = commands.add_parser("report", help="re-render report.md")
    render.add_argument("results")
    render.add_argument(
        "--out",
        help="the Markdown file to write (default: report.md beside "
        "results.json)",
    )
    render.add_argument(
        "--no-charts", action="store_true", help="tables only, no PNG charts"
    )

    changes = commands.add_parser("diff", help="compare two results.json")
    changes.add_argument("old")
    changes.add_argument("new")
    changes.add_argument("--factor", type=float, default=1.2)

    args = parser.parse_args(argv)
    if args.command == "report":
        print(report.render(args.results, args.out, not args.no_charts))
        return 0
    if args.command == "diff":
        lines, regressions = diff.compare_results(
            args.old, args.new, args.factor
        )
        print("\n".join(lines))
        return 1 if regressions else 0

    unknown = set(args.backends) - set(BACKENDS + NATIVE_BACKENDS)
    if unknown:
        parser.error(
            f"unknown backend(s) {sorted(unknown)}; use "
            f"{BACKENDS + NATIVE_BACKENDS}"
        )
    for hint in args.native_hint:
        if hint not in native.HINTS:
            parser.error(f"unknown --native-hint {hint!r}; use {native.HINTS}")
    model_names = _list(
        args.model or ("gpt2_base" if args.quick else "gpt2_medium")
    )
    for name in model_names:
        if name not in models.MODELS:
            parser.error(f"unknown model {name!r}; use {list(models.MODELS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    fix_modes = []
    for mode in args.fix:
        for part in ["off", "on"] if mode == "both" else [mode]:
            if part not in runner.FIX_PARTS and part != runner.AUTO_FIX:
                parser.error(
                    f"unknown --fix {mode!r}; use both, auto or "
                    f"{', '.join(runner.FIX_PARTS)}"
                )
            if part not in fix_modes:
                fix_modes.append(part)
    for dtype in args.dtype:
        if dtype not in runner.DTYPES:
            parser.error(f"unknown --dtype {dtype!r}; use {runner.DTYPES}")
    names = list(args.environments or [])
    for version in args.openvino or []:
        try:
            names.append(environments.for_openvino(version))
        except ValueError as error:
            parser.error(str(error))
    for name in names:
        if name not in environments.KNOWN_GOOD:
            parser.error(
                f"unknown environment {name!r}; use "
                f"{list(environments.KNOWN_GOOD)}"
            )
    names = list(dict.fromkeys(names)) or [environments.CURRENT]
    for cache in args.cache:
        if cache not in ("cold", "warm"):
            parser.error(f"--cache {cache}: use cold and/or warm")
    for batch in args.batch:
        if batch > len(models.PROMPTS):
            parser.error(
                f"--batch {batch}: there are {len(models.PROMPTS)} prompts"
            )
    out = args.out or "results/" + datetime.datetime.now().strftime(
        "%Y%m%d-%H%M%S"
    )
    configs = list(
        runner.configurations(
            model_names,
            args.backends,
            fix_modes,
            names,
            args.dtype,
            args.native_hint,
            args.device,
            args.new_tokens or [None],
            args.batch,
            args.cache,
        )
    )
    print(
        f"{len(configs)} configuration(s) x {repeats} repeat(s) -> {out}",
        flush=True,
    )
    results = runner.run_all(
        configs,
        repeats=repeats,
        out_dir=out,
        max_length=args.max_length,
        timeout=args.timeout,
        quiet_below=args.quiet_below,
        quiet_wait=args.quiet_wait,
        fresh_exports=args.fresh_exports,
        log=lambda text: print(text, flush=True),
    )
    path = report.render(f"{out}/results.json")
    print(f"wrote {out}/results.json, {path} and charts")
    failed = sum(not run["ok"] for run in results["runs"])
    return 1 if failed == len(results["runs"]) else 0


if __name__ == "__main__":
    sys.exit(main())
