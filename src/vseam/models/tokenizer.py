"""A SentencePiece-style BPE tokenizer built locally (no download), for tiny test models and the organism.

Like Llama's tokenizer it marks word starts with "▁" (Metaspace), so the answer "Yes" continuing
"ASSISTANT:" is the token "▁Yes", and it prepends ``<s>``. Any printable ASCII text can be
tokenized (the alphabet is seeded with it), frequent words of the corpus become single tokens.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]

# Words every tiny tokenizer knows as single tokens: the prompt templates and common answers.
BASE_CORPUS = [
    "USER: <image>\n{q} Please answer with a single word.\nASSISTANT: Yes",
    "USER: <image>\n{q} Please answer with a single word.\nASSISTANT: No",
    "Question: {q} Answer using a single word. yes",
    "Question: {q} Answer using a single word. no",
    "Is there a dog? Is the cat on the table? What color is the car? What is the man riding?",
    "red green blue yellow white black brown orange purple pink gray wood metal glass plastic",
    "left right above below on under top bottom in front of behind next to near",
    "circle square triangle cross star heart diamond ring",
]


def build_tokenizer(texts: Iterable[str] = (), vocab_size: int = 512, min_frequency: int = 1,
                    extra_special_tokens: Sequence[str] = (), add_bos: bool = True,
                    special_token_names: Mapping[str, str] | None = None, newline_runs: bool = False):
    """Train a small BPE tokenizer on ``BASE_CORPUS + texts`` and wrap it as a transformers tokenizer.

    Returned tokenizer pads on the left (batched last-token scoring needs it). ``<image>`` is a special
    token of the vocabulary; it is not set as ``tokenizer.image_token`` because InstructBLIP's processor
    then expects an ``AddedToken`` there (it registers its own otherwise). ``extra_special_tokens`` (a
    chat template's markers, e.g. Qwen2-VL's ``<|im_start|>`` and ``<|image_pad|>``) follow
    ``SPECIAL_TOKENS`` in the vocabulary; ``add_bos=False`` prepends no ``<s>`` (as Qwen's tokenizer).
    ``special_token_names`` names special tokens as attributes a processor reads (``{"boi_token":
    "<start_of_image>"}`` gives ``tokenizer.boi_token`` and ``tokenizer.boi_token_id``: Gemma 3's, PaliGemma's;
    ``{"start_image_token": "<img>"}``: InternVL's); they join the vocabulary as special tokens too.
    ``newline_runs=True`` makes a run of newlines one piece before merging (Gemma's tokenizer has single tokens for
    "\\n\\n", "\\n\\n\\n", ...), so "user\\n" followed by a processor's "\\n\\n" is one "\\n\\n\\n" token, as with the
    real tokenizer; by default every newline is its own piece.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = list(BASE_CORPUS) + list(texts)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Newlines are their own pieces so that "word.\nASSISTANT:" is not one token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\n+") if newline_runs else "\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        ]
    )
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = list(string.ascii_letters + string.digits + string.punctuation) + ["▁", "\n"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(dict.fromkeys([*SPECIAL_TOKENS, *extra_special_tokens, *(special_token_names or {}).values()])),
        initial_alphabet=alphabet,
        show_progress=False,
    )
    # Repeat the corpus so that every word of it reaches the merge threshold.
    tok.train_from_iterator(corpus * 4, trainer)
    bos = tok.token_to_id("<s>")
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
        **({"extra_special_tokens": dict(special_token_names)} if special_token_names else {}),
    )
