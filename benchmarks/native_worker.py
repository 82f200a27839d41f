"""One native OpenVINO run, in a fresh process: load the exported IR,
generate twice from the Keras rows' prompt token ids. keras-export is
openvino-genai on the package's export: the same pipeline and options.

Run by the runner as ``python -m benchmarks.native_worker ...``. The same
stages, sampler and record fields as benchmarks/worker.py: 0 start,
1 frameworks imported, 2 model loaded (the native pipelines compile here;
keras-hub compiles in its first call), 3 after the first call, 4 after the
second call, 5 after the model is deleted. Greedy, exactly ``--new-tokens``
new tokens (no end-of-sequence stops them), as the Keras rows generate.
``--prompt-ids`` more than once: a batch, one generate() call on every
prompt, left-padded (genai: token ids and their attention mask;
optimum-intel: Transformers' generate()), ``--new-tokens`` a prompt.
"""

import argparse
import json
import pathlib
import sys
import time

from benchmarks.native import BACKENDS, HINTS
from benchmarks.sampler import MB, MemorySampler, anon_file_fields

__all__ = ["main", "measure"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.native_worker")
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--hint", choices=HINTS, default="f32")
    parser.add_argument(
        "--prompt-ids",
        required=True,
        action="append",
        help="comma-separated; again for each further prompt of a batch",
    )
    parser.add_argument("--new-tokens", type=int, required=True)
    parser.add_argument(
        "--cache-dir",
        default="",
        help="OpenVINO's CACHE_DIR (default: none, every run compiles)",
    )
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    prompts = [
        [int(token) for token in ids.split(",")] for ids in args.prompt_ids
    ]
    record = measure(
        args.model_dir,
        args.backend,
        args.device,
        args.hint,
        prompts[0] if len(prompts) == 1 else prompts,
        args.new_tokens,
        args.cache_dir,
    )
    with open(args.result, "w") as handle:
        json.dump(record, handle)


def _check_device(device):
    """A device this machine lacks ends the run with a reason."""
    import openvino as ov

    available = ov.Core().available_devices  # e.g. CPU, GPU.0, GPU.1
    if device.split(".")[0] not in {name.split(".")[0] for name in available}:
        raise SystemExit(
            f"device {device} is not available here "
            f"(OpenVINO sees: {', '.join(available) or 'none'})"
        )


def _properties(hint, cache_dir=""):
    """Compile properties: the precision hint, and OpenVINO's compiled-blob
    cache only where asked (the warm rows): else every run compiles, as
    the Keras rows' runs do."""
    properties = {"CACHE_DIR": cache_dir}
    if hint == "f32":
        properties["INFERENCE_PRECISION_HINT"] = "f32"
    return properties


class _GenAI:
    """openvino-genai's LLMPipeline, fed token ids (no tokenizer)."""

    def __init__(self, model_dir, device, properties, new_tokens):
        import openvino_genai

        self.pipeline = openvino_genai.LLMPipeline(
            model_dir, device, **properties
        )
        self.config = openvino_genai.GenerationConfig()
        self.config.max_new_tokens = new_tokens
        self.config.min_new_tokens = new_tokens
        self.config.ignore_eos = True
        self.config.do_sample = False

    def generate(self, prompt):
        import numpy as np
        import openvino as ov

        ids = ov.Tensor(np.array([prompt], dtype=np.int64))
        return [
            int(t) for t in self.pipeline.generate(ids, self.config).tokens[0]
        ]

    def generate_batch(self, prompts):
        import openvino as ov
        import openvino_genai

        ids, mask = _left_padded(prompts)
        inputs = openvino_genai.TokenizedInputs(ov.Tensor(ids), ov.Tensor(mask))
        tokens = self.pipeline.generate(inputs, self.config).tokens
        return [[int(t) for t in row] for row in tokens]


class _Optimum:
    """optimum-intel's OVModelForCausalLM and Transformers' generate()."""

    def __init__(self, model_dir, device, properties, new_tokens):
        from optimum.intel import OVModelForCausalLM

        self.model = OVModelForCausalLM.from_pretrained(
            model_dir, device=device, ov_config=properties
        )
        self.new_tokens = new_tokens

    def generate(self, prompt):
        import torch

        ids = torch.tensor([prompt], dtype=torch.int64)
        output = self.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
            do_sample=False,
        )
        return [int(t) for t in output[0, len(prompt) :]]

    def generate_batch(self, prompts):
        import torch

        ids, mask = _left_padded(prompts)
        output = self.model.generate(
            torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            max_new_tokens=self.new_tokens,
            min_new_tokens=self.new_tokens,
            do_sample=False,
            # The padding's id: no warning that none was given.
            pad_token_id=0,
        )
        return [[int(t) for t in row] for row in output[:, ids.shape[1] :]]


def _left_padded(prompts):
    """(token ids, attention mask), int64 [prompts, longest]: each prompt
    at the right end of its row, after padding (id 0, mask 0)."""
    import numpy as np

    longest = max(len(prompt) for prompt in prompts)
    ids = np.zeros((len(prompts), longest), dtype=np.int64)
    mask = np.zeros((len(prompts), longest), dtype=np.int64)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt) :] = prompt
        mask[row, longest - len(prompt) :] = 1
    return ids, mask


_PIPELINES = {
    "openvino-genai": _GenAI,
    "optimum-intel": _Optimum,
    "keras-export": _GenAI,
}


def measure(model_dir, backend, device, hint, prompt, new_tokens, cache_dir=""):
    """``prompt``: token ids, or a list of them: one call on the batch
    (generated_ids then a list a row, new_tokens every row's)."""
    record = {"stages": []}
    batch = bool(prompt) and isinstance(prompt[0], list)
    with MemorySampler() as sampler:

        def stage(name):
            return sampler.stage(record["stages"], name)

        stage("start")
        if _PIPELINES[backend] is _GenAI:
            import openvino_genai  # noqa: F401
        else:
            import optimum.intel  # noqa: F401
            import torch  # noqa: F401
        _check_device(device)
        before_load = stage("imported")
        start = time.perf_counter()
        pipeline = _PIPELINES[backend](
            model_dir, device, _properties(hint, cache_dir), new_tokens
        )
        load_s = time.perf_counter() - start
        loaded = stage("loaded")

        generate = pipeline.generate_batch if batch else pipeline.generate
        sampler.reset_peak()
        start = time.perf_counter()
        first_ids = generate(prompt)
        first_s = time.perf_counter() - start
        first_call_peak = sampler.peak.rss
        after_first = stage("first call")

        start = time.perf_counter()
        second_ids = generate(prompt)
        second_s = time.perf_counter() - start
        stage("second call")
        del pipeline
        stage("deleted")

    weights = pathlib.Path(model_dir) / "openvino_model.bin"
    # Every generated token of every row.
    generated = sum(map(len, second_ids)) if batch else len(second_ids)
    # The same derived figures as benchmarks/worker.py's record.
    record.update(
        backend=backend,
        device=device,
        hint=hint,
        versions=_versions(backend),
        load_mb=round((loaded - before_load) / MB, 1),
        compile_mb=round((after_first - loaded) / MB, 1),
        first_call_peak_mb=round((first_call_peak - loaded) / MB, 1),
        peak_rss_mb=round(sampler.highest.rss / MB, 1),
        peak_swap_mb=round(sampler.highest.swap / MB, 1),
        growth_mb=round((sampler.highest.rss - before_load) / MB, 1),
        **anon_file_fields(sampler.highest, sampler.staged["imported"]),
        # The IR's weights file as stored (int8: compressed kernels).
        weight_mb=round(weights.stat().st_size / MB, 3),
        load_s=round(load_s, 3),
        first_s=round(first_s, 6),
        second_s=round(second_s, 6),
        new_tokens=generated,
        tokens_per_s=round(generated / second_s, 3),
        prompt_ids=prompt,
        generated_ids=second_ids,
        same_ids=first_ids == second_ids,
        timeline=sampler.timeline,
    )
    return record


def _versions(backend):
    from importlib import metadata

    names = ["openvino", "numpy"]
    names += {
        "openvino-genai": ["openvino-genai"],
        "optimum-intel": ["optimum-intel", "optimum", "transformers", "torch"],
        "keras-export": ["openvino-genai"],
    }[backend]
    versions = {"python": sys.version.split()[0]}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


if __name__ == "__main__":
    main()
