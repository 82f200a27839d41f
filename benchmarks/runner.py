"""Run every configuration in a fresh subprocess and keep every record.

Configurations are interleaved within each repeat (all of repeat 0, then
all of repeat 1, ...) so that slow drifts of the machine spread over all of
them. ``results.json`` is rewritten after every run, and a run that crashes,
is killed or times out becomes a failed record with its error.
"""

import atexit
import contextlib
import dataclasses
import datetime
import json
import os
import pathlib
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchmarks import environments, models, native

__all__ = [
    "DTYPES",
    "AUTO_FIX",
    "FIX_PARTS",
    "Configuration",
    "configurations",
    "machine_info",
    "run_all",
]

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _fix_modes():
    """--fix value -> (the switches keras_ov_einsum.enable() gets, or None
    for stock; the run's label), from the package's part registry.

    ``on`` is every default part; ``<part>`` a default part alone with the
    parts it requires (what it contributes on its own), or an opt-in part
    with the parts it requires on top of ``on``; ``no_<part>`` every
    default part but that one and the parts that act only through it (what
    it adds to the rest).
    """
    from keras_ov_einsum.core.registry import (
        default_switches,
        dependents,
        required,
    )

    defaults = default_switches()
    every_off = dict.fromkeys(defaults, False)
    modes = {"off": (None, "stock"), "on": (defaults, "fix")}
    for name, default in defaults.items():
        needed = dict.fromkeys(required(name), True)
        if default:  # with the parts it needs to act at all
            modes[name] = (
                {**every_off, **needed, name: True},
                f"fix ({name} only)",
            )
            # and without the parts that act only through it
            modes[f"no_{name}"] = (
                {**defaults, **dict.fromkeys(dependents(name), False)}
                | {name: False},
                f"fix without {name}",
            )
        else:  # with the opt-in parts it requires
            modes[name] = (
                {**defaults, **needed, name: True},
                f"fix + {name}",
            )
    return modes


_FIX_MODES = _fix_modes()
# --fix auto: every default part, and the opt-in part a weight format
# needs to be kept in its own type (the rows held against genai's).
AUTO_FIX = "auto"
AUTO_PARTS = {"int8": "int8", "int8_weights": "int8", "int4": "int4"}
FIX_PARTS = {mode: parts for mode, (parts, _) in _FIX_MODES.items()}
_FIX_NAMES = {mode: label for mode, (_, label) in _FIX_MODES.items()}
# Weight formats: a keras dtype policy given to from_preset (bfloat16: the
# float32 preset cast in the load), or int8 and float16: a preset saved in
# that format (models.saved_preset), as the native rows load an IR written
# in it;
# int8_weights: a preset saved quantized weights-only
# (``Int8QuantizationConfig(activation_quantizer=None)``, what an int8 IR
# holds), which keras-hub loads weights-only with the quantization_configs
# part; stock's row quantizes the float32 preset in its measured load
# (stock keras-hub would load the saved one as its default int8).
# int4: a preset saved after keras's ``quantize("int4")`` (weights-only,
# groups of 128 with zero points), which stock keras-hub loads as it is.
DTYPES = ("float32", "float16", "bfloat16", "int8", "int8_weights", "int4")


@dataclasses.dataclass(frozen=True)
class Configuration:
    model: str
    backend: str  # a Keras backend or one of native.BACKENDS
    fix: str  # a FIX_PARTS key ("off" for the native rows)
    environment: str  # an environments.KNOWN_GOOD name
    dtype: str = "float32"
    # The native rows' INFERENCE_PRECISION_HINT (native.HINTS) and device;
    # keras-hub chooses its own device and hint.
    hint: str = None
    device: str = "CPU"
    # More than one environment is measured: OpenVINO rows name theirs
    # (else their OpenVINO version, as results before environments did).
    environment_in_label: bool = False
    # New tokens a row generates after its prompt (None: as many as
    # --max-length leaves, as results before --new-tokens did), and how
    # many prompts (models.PROMPTS' first) one call generates from.
    new_tokens: int = None
    batch: int = 1
    # A second process with each side's compiled-model cache, filled by a
    # run not recorded: Keras's compiled_cache part, OpenVINO's CACHE_DIR.
    warm: bool = False

    @property
    def native(self):
        return self.backend in native.BACKENDS

    @property
    def openvino_version(self):
        return environments.openvino_of(self.environment)

    @property
    def label(self):
        label = self.backend
        if self.backend == "openvino":
            where = (
                self.environment
                if self.environment_in_label
                else self.openvino_version
            )
            label += f" {where} {_FIX_NAMES[self.fix]}"
        if self.native:
            label += f" {self.openvino_version} {self.hint} hint"
            if self.device != "CPU":
                label += f" on {self.device}"
        if self.dtype != "float32":
            label += f", {self.dtype}"
        return label + self.workload_label

    @property
    def workload_label(self):
        """The label's end naming a workload other than --max-length's one
        prompt ("" for it, as before --new-tokens and --batch)."""
        label = ""
        if self.new_tokens is not None:
            label += f", {self.new_tokens} new tokens"
        if self.batch != 1:
            label += f", batch {self.batch}"
        if self.warm:
            label += ", warm cache"
        return label

    @property
    def stock_label(self):
        """The label of the same configuration without the fix (a native
        row has no fix: its own label)."""
        return dataclasses.replace(self, fix="off").label


def configurations(
    model_names,
    backends,
    fix_modes,
    environment_names=(environments.CURRENT,),
    dtypes=("float32",),
    hints=("f32",),
    device="CPU",
    new_tokens=(None,),
    batches=(1,),
    caches=("cold",),
):
    """Every row, in order: the OpenVINO rows in each environment, the
    others in the harness's own (the native packages are built for its
    OpenVINO; the other stacks have no other Keras backend); each weight
    format's rows once per workload (``new_tokens``: None for
    --max-length's; ``batches``: prompts a call; ``caches``: "cold" and/or
    "warm", the latter for the rows that have a compiled-model cache:
    the native ones and the fix's, not stock's)."""
    current = environments.CURRENT
    named = len(environment_names) > 1
    workloads = [
        (count, batch, cache == "warm")
        for count in new_tokens
        for batch in batches
        for cache in caches
    ]
    for model in model_names:
        for dtype in dtypes:
            for count, batch, warm in workloads:
                workload = dict(new_tokens=count, batch=batch, warm=warm)
                for backend in backends:
                    if warm and backend not in native.BACKENDS + ("openvino",):
                        continue
                    if backend in native.BACKENDS:
                        for hint in hints:
                            yield Configuration(
                                model,
                                backend,
                                "off",
                                current,
                                dtype,
                                hint,
                                device,
                                **workload,
                            )
                        continue
                    if backend != "openvino":
                        yield Configuration(
                            model, backend, "off", current, dtype, **workload
                        )
                        continue
                    for environment in environment_names:
                        fixes = [
                            AUTO_PARTS.get(dtype, "on")
                            if mode == AUTO_FIX
                            else mode
                            for mode in fix_modes
                        ]
                        for fix in dict.fromkeys(fixes):
                            if warm and fix == "off":
                                continue
                            yield Configuration(
                                model,
                                backend,
                                fix,
                                environment,
                                dtype,
                                environment_in_label=named,
                                **workload,
                            )


# Instruction sets that decide what the CPU plugin runs: with bfloat16
# units its default precision (and keras-hub's f16 hint) is bfloat16, with
# int8 dot products it quantizes int8-weight layers' inputs. Two machines
# of this project, both "AMD EPYC", differed in them.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


def machine_info():
    import psutil

    info = {}  # the first processor's fields
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if not key.strip():
                    break
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = info.get("model name", platform.processor())
    flags = set(info.get("flags", "").split())
    return {
        "cpu": cpu,
        "cpu_flags": [flag for flag in ISA_FLAGS if flag in flags],
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg(),
    }


def _commit():
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _preset(python, configuration, log):
    """Build (once) the preset: in the harness's venv, with JAX, for every
    stack but one with presets of its own, whose venv builds them."""
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=str(ROOT))
    if environments.KNOWN_GOOD[configuration.environment].own_presets:
        env["KERAS_OV_EINSUM_PRESETS"] = str(
            models.presets_root() / configuration.environment
        )
        # Not its OpenVINO backend: keras 3.12's cannot even build Llama's
        # RMS norm symbolically (ops.power on a dynamic shape), which the
        # measured run then records. TensorFlow comes with keras-hub.
        env["KERAS_BACKEND"] = "tensorflow"
    else:
        python = sys.executable
    script = (
        "import sys; from benchmarks import models; "
        "preset = models.build_preset(sys.argv[1]); "
        # The int8 and float16 rows load a preset saved in their format,
        # as a model is shipped (and as the native rows get an IR in it).
        "sys.argv[2] in models.SAVED_FORMATS and "
        "models.saved_preset(preset, sys.argv[2]); "
        "print(preset)"
    )
    completed = subprocess.run(
        [python, "-c", script, configuration.model, configuration.dtype],
        env=env,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"building the {configuration.model} preset failed: "
            f"{_error_tail(completed.stderr)}"
        )
    path = completed.stdout.strip().splitlines()[-1]
    log(f"preset {configuration.model}: {path}")
    return path


# TensorFlow's and absl's log lines, which bury the traceback.
_LOG_NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages|To enable)")


def _error_tail(stderr, lines=8):
    """The end of a failed process's traceback, without framework logs."""
    stderr = re.sub(r"\x1b\[[0-9;]*m", "", stderr)  # Keras colours errors
    kept = [
        line
        for line in stderr.strip().splitlines()
        if line.strip() and not _LOG_NOISE.match(line)
    ]
    if any(line.startswith("Traceback") for line in kept):
        last = max(
            index
            for index, line in enumerate(kept)
            if line.startswith("Traceback")
        )
        # The exception itself, which follows the frames.
        frames_end = next(
            (
                index
                for index in range(last + 1, len(kept))
                if not kept[index].startswith((" ", "Traceback"))
            ),
            len(kept),
        )
        kept = kept[frames_end:]
    return " | ".join(kept[:lines])[:1500]


def _export_key(configuration):
    """Rows that run the same export: (exporter, model, dtype)."""
    exporter = native.EXPORTERS[configuration.backend]
    return exporter, configuration.model, configuration.dtype


def _native_model(python, preset, configuration, log, fresh=False):
    """Export (once, or again with ``fresh``) the preset for a native row:
    native.export's {"ir", "prompt_ids", "export_s", "exported"}."""
    exporter, _, dtype = _export_key(configuration)
    native.weight_format_of(dtype, exporter)  # fails before exporting
    env = native.offline_environment()
    env.update(KERAS_BACKEND="jax", PYTHONPATH=str(ROOT))
    command = [python, "-m", "benchmarks.native", preset, dtype]
    command += ["--exporter", exporter] + ["--fresh"] * fresh
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(
            f"exporting {configuration.model} for the {exporter} rows "
            f"failed: {_error_tail(completed.stderr)}"
        )
    exported = json.loads(completed.stdout.strip().splitlines()[-1])
    log(
        f"{exporter} export {configuration.model} {dtype}: {exported['ir']} "
        f"({exported['export_s']} s, {exported['exported']})"
    )
    return exported


def _keras_command(python, preset, configuration, max_length, cache=None):
    """``cache``: the warm rows' compiled_cache folder."""
    command = [python, "-m", "benchmarks.worker", "--preset", preset]
    command += ["--fix", configuration.fix, "--dtype", configuration.dtype]
    if cache:
        command += ["--compiled-cache", str(cache)]
    env = dict(
        os.environ,
        KERAS_BACKEND=configuration.backend,
        PYTHONPATH=str(ROOT),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    if configuration.new_tokens is None:
        command += ["--max-length", str(max_length)]
    else:
        command += ["--new-tokens", str(configuration.new_tokens)]
    if configuration.batch != 1:
        command += ["--batch", str(configuration.batch)]
    return command, env


def _prompts_ids(exported, batch):
    """The token ids of the first ``batch`` prompts (models.PROMPTS) as
    the Keras rows' preprocessor packs them, from the export."""
    if batch == 1:
        return [exported["prompt_ids"]]
    return exported["prompts_ids"][:batch]


def _native_command(python, exported, configuration, max_length, cache=None):
    """``cache``: the warm rows' CACHE_DIR."""
    ir = exported["ir"]
    prompts = _prompts_ids(exported, configuration.batch)
    command = [python, "-m", "benchmarks.native_worker", "--model-dir", ir]
    command += ["--backend", configuration.backend]
    command += ["--device", configuration.device, "--hint", configuration.hint]
    for prompt_ids in prompts:
        command += ["--prompt-ids", ",".join(str(i) for i in prompt_ids)]
    # As many new tokens a prompt as the Keras rows' generate() makes after
    # the longest prompt: --new-tokens, or what max_length leaves.
    new_tokens = configuration.new_tokens
    if new_tokens is None:
        new_tokens = max_length - max(len(ids) for ids in prompts)
    command += ["--new-tokens", str(new_tokens)]
    if cache:
        command += ["--cache-dir", str(cache)]
    env = native.offline_environment()
    env.update(PYTHONPATH=str(ROOT))
    return command, env


def _run_one(command, env, timeout):
    """Run a worker command; its record, or a failed record with why."""
    with tempfile.TemporaryDirectory() as scratch:
        result = pathlib.Path(scratch) / "result.json"
        command = command + ["--result", str(result)]
        try:
            completed = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"ok": False, "error": f"timed out after {timeout} s"}
        if completed.returncode != 0 or not result.exists():
            code = completed.returncode
            if code < 0:
                reason = f"killed by signal {signal.Signals(-code).name}"
                if code == -signal.SIGKILL:
                    reason += " (out of memory?)"
            else:
                reason = f"exit code {code}"
            return {
                "ok": False,
                "error": f"{reason}: {_error_tail(completed.stderr)}",
            }
        record = json.loads(result.read_text())
        record["ok"] = True
        record["error"] = None
        return record


def _weight_folders(configuration, preset, exports):
    """The folders a row reads its model from: the IR's for a native row,
    the preset's for a Keras row (int8, float16: the saved preset's)."""
    if configuration.native:
        return [exports[_export_key(configuration)]["ir"]]
    if models.loads_saved(configuration.dtype, FIX_PARTS[configuration.fix]):
        return [models.saved_preset_dir(preset, configuration.dtype)]
    return [preset]


def _read_once(folders):
    """Read every file in ``folders`` once, untimed; return the seconds it
    took.

    Each run then starts with its model's files in the OS page cache, the
    same for every row: a run after rows that filled the memory (stock's
    int8 peaks at 8 GB) would otherwise read its weights from the disk and
    time the disk, for one row and not the next (genai's float32 load took
    4.5 s in such a run, 1.6 s alone). How long the read took shows which
    runs found their files evicted.
    """
    started = time.perf_counter()
    for folder in folders:
        for path in sorted(pathlib.Path(folder).rglob("*")):
            if path.is_file():
                with open(path, "rb") as file:
                    while file.read(1 << 24):
                        pass
    return round(time.perf_counter() - started, 2)


def _wait_for_quiet(quiet_below, quiet_wait, log):
    """Wait (at most ``quiet_wait`` s) until other processes use less than
    ``quiet_below`` percent of the CPU; return (busy percent, waited s).

    The machine may be shared: a run that starts while others compute
    measures them too. Waiting is optional; the busy figure is always
    recorded beside the run.
    """
    import psutil

    started = time.monotonic()
    busy = psutil.cpu_percent(interval=1.0)
    if quiet_below is not None and busy >= quiet_below:
        log(f"    waiting for the CPU to fall below {quiet_below}% busy")
        while busy >= quiet_below and time.monotonic() - started < quiet_wait:
            busy = psutil.cpu_percent(interval=2.0)
    return busy, round(time.monotonic() - started, 1)


def run_all(
    configs,
    *,
    repeats,
    out_dir,
    max_length,
    timeout,
    log=print,
    quiet_below=None,
    quiet_wait=120,
    fresh_exports=False,
):
    """Run ``configs`` ``repeats`` times; ``fresh_exports``: export the
    native rows' models again (and time it) rather than reuse the cached
    exports."""
    # The workloads (new tokens None: max_length's; batch 1: one prompt).
    new_tokens = list(dict.fromkeys(c.new_tokens for c in configs))
    batches = list(dict.fromkeys(c.batch for c in configs))
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "commit": _commit(),
        "machine": machine_info(),
        "packages": environments.packages(sys.executable),
        # Per environment: the interpreter and every package it runs.
        "environments": {},
        "parameters": {
            "quiet_below_percent": quiet_below,
            "quiet_wait_s": quiet_wait,
            "repeats": repeats,
            "max_length": max_length,
            "new_tokens": None if new_tokens == [None] else new_tokens,
            "batch": batches,
            "warm": any(c.warm for c in configs),
            "timeout_s": timeout,
            "fresh_exports": fresh_exports,
        },
        "runs": [],
    }
    pythons, presets, exports = {}, {}, {}
    caches = _Caches()
    total = len(configs) * repeats
    with _progress(total) as advance:
        for repeat in range(repeats):
            for configuration in configs:
                done = len(results["runs"]) + 1
                log(
                    f"[{done}/{total}] {configuration.model} "
                    f"{configuration.label} (repeat {repeat + 1}/{repeats})"
                )
                # Other work on the machine moves timings: keep it beside them.
                cpu_busy, waited = _wait_for_quiet(quiet_below, quiet_wait, log)
                loadavg_before = os.getloadavg()
                started = time.perf_counter()
                record, warmed_s = {"ok": False}, None
                try:
                    name = configuration.environment
                    if name not in pythons:
                        pythons[name] = environments.python_for(name, log)
                        results["environments"][name] = {
                            "python": pythons[name],
                            "packages": environments.packages(pythons[name]),
                        }
                    # One build a model and presets folder, and one more for
                    # each saved format (the build saves that preset as well).
                    stack = environments.KNOWN_GOOD[name]
                    saved = configuration.dtype in models.SAVED_FORMATS
                    key = (
                        configuration.model,
                        name if stack.own_presets else None,
                        configuration.dtype if saved else None,
                    )
                    if key not in presets:
                        if configuration.model not in stack.models:
                            log(
                                f"    {configuration.model} has not been "
                                f"seen to run in {name} (seen: "
                                f"{', '.join(stack.models)}). {stack.note}"
                            )
                        presets[key] = _preset(
                            pythons[name], configuration, log
                        )
                    if configuration.native:
                        export_key = _export_key(configuration)
                        if export_key not in exports:
                            exports[export_key] = _native_model(
                                pythons[name],
                                presets[key],
                                configuration,
                                log,
                                fresh_exports,
                            )
                        command, env = _native_command(
                            pythons[name],
                            exports[export_key],
                            configuration,
                            max_length,
                            caches.folder(configuration),
                        )
                    else:
                        command, env = _keras_command(
                            pythons[name],
                            presets[key],
                            configuration,
                            max_length,
                            caches.folder(configuration),
                        )
                    if caches.to_fill(configuration):
                        log("    filling its compiled-model cache (not timed)")
                        filled = _run_one(command, env, timeout)
                        if not filled["ok"]:
                            log(f"    FAILED: {filled['error'][:300]}")
                    warmed_s = _read_once(
                        _weight_folders(configuration, presets[key], exports)
                    )
                    record = _run_one(command, env, timeout)
                except (
                    Exception
                ) as error:  # a broken configuration, not the run
                    record = {
                        "ok": False,
                        "error": f"{type(error).__name__}: {error}",
                    }
                record.update(
                    model=configuration.model,
                    backend=configuration.backend,
                    fix=configuration.fix,
                    dtype=configuration.dtype,
                    hint=configuration.hint,
                    label=configuration.label,
                    stock_label=configuration.stock_label,
                    requested_new_tokens=configuration.new_tokens,
                    warm=configuration.warm,
                    batch=configuration.batch,
                    environment=configuration.environment,
                    openvino_version=configuration.openvino_version,
                    repeat=repeat,
                    wall_s=round(time.perf_counter() - started, 1),
                    loadavg_before=loadavg_before,
                    cpu_busy_before=cpu_busy,
                    waited_for_quiet_s=waited,
                    warmed_s=warmed_s,
                    loadavg_after=os.getloadavg(),
                )
                if configuration.native:  # also when the run failed
                    record["device"] = configuration.device
                    exported = exports.get(_export_key(configuration))
                    if exported:  # the export's, once per row and run
                        record["export_s"] = exported["export_s"]
                        record["exported"] = exported["exported"]
                results["runs"].append(record)
                _write(out_dir / "results.json", results)
                advance()
                if record["ok"]:
                    log(
                        f"    first {record['first_s']:.2f}s, second "
                        f"{record['second_s']:.2f}s, first-call growth "
                        f"{record['compile_mb']:.0f} MB, peak growth "
                        f"{record['growth_mb']:.0f} MB, {record['new_tokens']} "
                        "new tokens"
                    )
                else:
                    log(f"    FAILED: {record['error'][:300]}")
    caches.remove()
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    _write(out_dir / "results.json", results)
    return results


class _Caches:
    """The warm rows' compiled-model caches: a folder a row, in a temporary
    folder removed at the end (a blob is about the weights' size)."""

    def __init__(self):
        self._root = None
        self._filled = set()

    def folder(self, configuration):
        if not configuration.warm:
            return None
        if self._root is None:
            self._root = tempfile.mkdtemp(prefix="compare-compiled-cache-")
            # Also when the run is interrupted.
            atexit.register(shutil.rmtree, self._root, ignore_errors=True)
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", configuration.label)
        return pathlib.Path(self._root) / f"{configuration.model}-{slug}"

    def to_fill(self, configuration):
        """True once for each warm row: its first run fills the cache."""
        if not configuration.warm or configuration in self._filled:
            return False
        self._filled.add(configuration)
        return True

    def remove(self):
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


@contextlib.contextmanager
def _progress(total):
    """A bar of the runs done, with the time left, where the output is a
    terminal (the runs' lines print above it); nothing otherwise. Yields
    the function to call after each run."""
    if not sys.stdout.isatty():
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as progress:
        task = progress.add_task("runs", total=total)
        yield lambda: progress.advance(task)


def _write(path, results):
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(results, indent=1))
    partial.replace(path)
