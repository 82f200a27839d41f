"""``python -m keras_ov_einsum.export PRESET DIRECTORY [--weights W]``:
a keras-hub preset (a name or a folder) exported as the directory
openvino-genai and optimum-intel load (``export_genai``)."""

import argparse
import os
import sys

from .weights import WEIGHTS


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_ov_einsum.export",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("preset", help="a keras-hub preset: name or folder")
    parser.add_argument("directory", help="where the IRs and configs go")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="float32",
        help="the IR's weights (int8: NNCF's asymmetric per-channel form)",
    )
    args = parser.parse_args(argv)
    # The trace needs Keras's OpenVINO backend, chosen at keras's import.
    os.environ.setdefault("KERAS_BACKEND", "openvino")
    import keras_hub

    import keras_ov_einsum

    # The package's loading parts make from_preset lighter.
    with keras_ov_einsum.enabled():
        causal_lm = keras_hub.models.CausalLM.from_preset(
            args.preset, dtype="float32"
        )
    try:
        directory = keras_ov_einsum.export_genai(
            causal_lm, args.directory, weights=args.weights
        )
    except keras_ov_einsum.ExportError as error:
        parser.exit(1, f"cannot export {args.preset}: {error}\n")
    print(directory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
