"""``python -m benchmarks.explain [--model gpt2_tiny] [--fix on]``: what
the patch did to one keras-hub model's ``generate()`` graph.

Builds (once) the model's preset like the harness does, enables the parts
of ``--fix``, runs ``generate("Hello", max_length=10)`` on the OpenVINO
backend and prints ``keras_ov_einsum.explain()``: every patched call, lowered
or left stock, and why. The README's example is this command's output.
"""

import argparse
import os
import sys

__all__ = ["main"]


def main(argv=None):
    os.environ.setdefault("KERAS_BACKEND", "openvino")
    from benchmarks import models, runner

    parser = argparse.ArgumentParser(prog="python -m benchmarks.explain")
    parser.add_argument("--model", default="gpt2_tiny", choices=models.MODELS)
    parser.add_argument("--fix", default="on", choices=runner.FIX_PARTS)
    args = parser.parse_args(argv)
    if runner.FIX_PARTS[args.fix] is None:
        parser.error("--fix off patches nothing: there is nothing to explain")

    import keras
    import keras_hub

    import keras_ov_einsum

    if keras.config.backend() != "openvino":
        parser.error("set KERAS_BACKEND=openvino (or leave it unset)")
    preset = models.build_preset(args.model)
    with keras_ov_einsum.enabled(**runner.FIX_PARTS[args.fix]):
        causal_lm = keras_hub.models.CausalLM.from_preset(str(preset))
        causal_lm.compile(sampler="greedy")
        causal_lm.generate(models.PROMPT, max_length=10)
        print(keras_ov_einsum.explain())
    return 0


if __name__ == "__main__":
    sys.exit(main())
