"""The tokenizer and detokenizer IRs, converted by openvino-tokenizers
from a Hugging Face tokenizer built from the keras-hub tokenizer's own
vocabulary.

openvino-tokenizers converts Hugging Face tokenizers only. A keras-hub
byte-pair tokenizer (GPT-2's) becomes a ``tokenizers`` byte-level BPE on
its vocabulary and merges; a SentencePiece one (Llama's, Gemma's) a
Transformers SentencePiece tokenizer on its proto, which openvino-tokenizers
converts from the proto itself, normalization included, as keras-hub runs
it. Each prepends the start token where the model's preprocessor does in
``generate()`` (all three do), and pads on the left, as genai's stateful
pipeline and Transformers' ``generate()`` need a batch of prompts padded.

GPT-2's byte-level split is Hugging Face's (OpenAI's regular expression):
keras-hub's approximates it and splits a run of spaces before a word, or
after a newline, otherwise (``"a  b"``: keras-hub's ``"ĠĠ", "b"``, GPT-2's
``"Ġ", "Ġb"``). Text in a special token's spelling is that token here, as
in Transformers; keras-hub reads it as text.
"""

import contextlib
import tempfile

from .model import ExportError

__all__ = ["convert", "special_ids"]

_BYTE_PAIR = "keras_hub.src.tokenizers.byte_pair_tokenizer.BytePairTokenizer"
_SENTENCE_PIECE = (
    "keras_hub.src.tokenizers.sentence_piece_tokenizer.SentencePieceTokenizer"
)


def special_ids(tokenizer):
    """``{"bos_token_id", "eos_token_id", "pad_token_id"}`` of a keras-hub
    tokenizer, those it has."""
    ids = {}
    for key, token in (
        ("bos_token_id", getattr(tokenizer, "start_token", None)),
        ("eos_token_id", getattr(tokenizer, "end_token", None)),
    ):
        if token is not None:
            ids[key] = int(tokenizer.token_to_id(token))
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is not None:
        ids["pad_token_id"] = int(pad)
    return ids


def convert(causal_lm):
    """(tokenizer IR, detokenizer IR) of ``causal_lm``'s preprocessor's
    tokenizer. Raises ``ExportError`` where it has none or one of a kind
    not converted."""
    preprocessor = getattr(causal_lm, "preprocessor", None)
    tokenizer = getattr(preprocessor, "tokenizer", None)
    if tokenizer is None:
        raise ExportError(
            f"{type(causal_lm).__name__} has no preprocessor with a "
            "tokenizer: genai reads openvino_tokenizer.xml and "
            "openvino_detokenizer.xml beside the model"
        )
    add_start = bool(getattr(preprocessor, "add_start_token", True))
    kinds = {_qualified(klass) for klass in type(tokenizer).__mro__}
    with contextlib.ExitStack() as stack:
        if _BYTE_PAIR in kinds:
            _require("tokenizers")
            hf_tokenizer = _byte_pair(tokenizer, add_start)
        elif _SENTENCE_PIECE in kinds:
            _require("sentencepiece")
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            hf_tokenizer = _sentence_piece(tokenizer, add_start, folder)
        else:
            raise ExportError(
                f"{type(tokenizer).__name__}: only keras-hub's byte-pair and "
                "SentencePiece tokenizers are converted"
            )
        import openvino_tokenizers

        return openvino_tokenizers.convert_tokenizer(
            hf_tokenizer, with_detokenizer=True
        )


def _require(*modules):
    """An ImportError naming the extra to install where one of the
    converters' packages is missing."""
    import importlib.util

    for name in ("openvino_tokenizers", "transformers", *modules):
        if importlib.util.find_spec(name) is None:
            raise ImportError(
                f"the tokenizer IRs need {name}: pip install "
                "'keras-ov-einsum[export]'"
            )


def _qualified(klass):
    return f"{klass.__module__}.{klass.__qualname__}"


def _special_tokens(tokenizer):
    ids = special_ids(tokenizer)
    return {
        key.replace("_id", ""): tokenizer.id_to_token(value)
        for key, value in ids.items()
    }


def _byte_pair(tokenizer, add_start):
    """A fast byte-level BPE tokenizer on the vocabulary and merges."""
    import tokenizers
    import transformers
    from tokenizers import decoders, models, pre_tokenizers, processors

    merges = [tuple(merge.split(" ")) for merge in tokenizer.merges]
    model = tokenizers.Tokenizer(
        models.BPE(vocab=dict(tokenizer.vocabulary), merges=merges)
    )
    model.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=bool(getattr(tokenizer, "add_prefix_space", False))
    )
    model.decoder = decoders.ByteLevel()
    model.add_special_tokens(
        [
            tokenizers.AddedToken(token, special=True)
            for token in tokenizer.special_tokens
        ]
    )
    if add_start and tokenizer.start_token is not None:
        start = tokenizer.start_token
        model.post_processor = processors.TemplateProcessing(
            single=f"{start} $A",
            special_tokens=[(start, tokenizer.token_to_id(start))],
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model,
        padding_side="left",
        **_special_tokens(tokenizer),
    )


def _sentence_piece(tokenizer, add_start, folder):
    """A Transformers SentencePiece tokenizer on the proto, written into
    ``folder`` (which must outlive the conversion: it reads the file)."""
    import pathlib

    from transformers.tokenization_utils_sentencepiece import (
        SentencePieceBackend,
    )

    class _Tokenizer(SentencePieceBackend):
        # What openvino-tokenizers asks to learn whether the start token
        # is prepended.
        def build_inputs_with_special_tokens(self, ids, pair=None):
            start = [self.bos_token_id] if add_start else []
            return start + list(ids) + (list(pair) if pair else [])

    proto = tokenizer.proto
    if isinstance(proto, str):  # a file's path
        proto = pathlib.Path(proto).read_bytes()
    vocabulary = pathlib.Path(folder) / "tokenizer.model"
    vocabulary.write_bytes(proto)
    return _Tokenizer(
        vocab_file=str(vocabulary),
        padding_side="left",
        **_special_tokens(tokenizer),
    )
