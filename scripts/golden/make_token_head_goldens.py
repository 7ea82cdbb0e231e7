#!/usr/bin/env python3
"""Make small `<Family>ForTokenClassification` folders and their golden token logits.

Usage:
    python scripts/golden/make_token_head_goldens.py NATIVE_HEADS_DIR OUT_DIR

NATIVE_HEADS_DIR holds the random-weight sequence classifiers of make_native_head_goldens.py.
For every family, the same config becomes an `AutoModelForTokenClassification` with five labels
(O, B-PER, I-PER, B-LOC, I-LOC); the backbone's tensors (everything under the family's base-model
prefix: `bert.`, `roberta.`, `model.`, ...) are copied from the sequence classifier, so the
encoder is identical, and the token head is drawn afresh: torch.manual_seed(0), then N(0, 0.3²)
for every head tensor in `named_parameters` order (`classifier.weight`, `classifier.bias`;
ModernBERT first `head.dense.weight` and `head.norm.weight`). The model is saved with
`save_pretrained` (safetensors) in OUT_DIR/<family>/ next to copies of the tokenizer files.

OUT_DIR/<family>.json then holds:
  - `words`: for four pre-split sentences, `tokenizer(words, is_split_into_words=True,
    truncation=True, max_length=16, return_token_type_ids=True)`'s input_ids, token_type_ids,
    word_ids (null for special tokens), tokens, and the model's logits [seq, 5];
  - `raw`: for two raw texts, `tokenizer(text, return_offsets_mapping=True,
    return_token_type_ids=True)`'s ids, offsets, word_ids, tokens and logits, and the output of
    `pipeline("token-classification", model=folder, aggregation_strategy=...)` for "first"
    (entity_group, score, word, start, end) and "none" (entity, score, index, word, start, end).

Byte-level BPE tokenizers (here only roberta's) need `add_prefix_space=True` for pre-split words,
as transformers' run_ner.py does. The folders' tokenizer_config.json names the generic
`PreTrainedTokenizerFast`, whose transformers 5 backend stores that flag but leaves the
ByteLevel pre-tokenizer alone, so the words are encoded with `RobertaTokenizer.from_pretrained(
folder, add_prefix_space=True)`, which rebuilds the pre-tokenizer and post-processor with it;
the ids are checked against tokenizer.json with its ByteLevel pre-tokenizer switched to
add_prefix_space=true. The raw texts use the tokenizer the pipeline loads from the folder (no
prefix space). Every model runs on the CPU in float32, eval mode, under no_grad; token_type_ids
are passed only to models whose forward takes them.

OUT_DIR/seqeval.json: small (y_true, y_pred) cases of IOB2 tag sequences and, for each,
`seqeval.metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)` and
`precision_score`, `recall_score`, `f1_score`, `accuracy_score` in seqeval's default
(non-strict, conlleval-like) mode, plus precision/recall/F1 in strict IOB2 mode; the last case
is every sentence of datasets/conll2003-sample/test.conll against a corrupted copy of its tags.
"""
import argparse
import inspect
import json
import os
import shutil
import warnings
from importlib.metadata import version

import torch
import transformers
from seqeval import metrics
from seqeval.scheme import IOB2
from tokenizers import Tokenizer, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    RobertaTokenizer,
    pipeline,
)

FAMILIES = ["bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mpnet",
            "modernbert", "deberta-v3", "deberta-v2"]
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
MAX_LENGTH = 16
SENTENCES = [
    # plain; the tokenizers here have tiny vocabularies, so the first three sentences are kept
    # short enough to fit MAX_LENGTH tokens in every family
    ["Tom", "is", "in", "New", "York", "."],
    # a word every tokenizer here splits into many pieces
    ["Schwarzenegger", "won"],
    # punctuation and digits
    ["U.S.", "is", "3-1", "!"],
    # long enough to be cut at MAX_LENGTH tokens
    ["Maria", "and", "Peter", "flew", "from", "Berlin", "to", "Rome", "on", "Monday", "and",
     "then", "drove", "to", "Naples", "with", "their", "friends", "."],
]
TEXTS = [
    "Angela Merkel met Emmanuel Macron in Paris.",
    "Schwarzenegger visited Berlin, then New York.",
]


def byte_level(tokenizer_json):
    state = json.loads(tokenizer_json.pre_tokenizer.__getstate__())
    return state.get("type") == "ByteLevel"


def make(family, native_dir, out_dir):
    source = os.path.join(native_dir, family)
    config = AutoConfig.from_pretrained(source)
    config.num_labels = len(LABELS)
    config.id2label = dict(enumerate(LABELS))
    config.label2id = {label: i for i, label in enumerate(LABELS)}
    config.architectures = None
    model = AutoModelForTokenClassification.from_config(config).eval()
    seq = AutoModelForSequenceClassification.from_pretrained(source).eval()
    seq_state = seq.state_dict()

    prefix = model.base_model_prefix + "."
    head = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(prefix):
                if name not in seq_state or seq_state[name].shape != p.shape:
                    raise ValueError(f"{family}: backbone tensor {name} not in {source}")
                p.copy_(seq_state[name])
            else:
                head.append(name)
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if name in head:
                p.normal_(0.0, 0.3)

    folder = os.path.join(out_dir, family)
    model.save_pretrained(folder, safe_serialization=True)
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        shutil.copy(os.path.join(source, name), os.path.join(folder, name))

    backend = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    add_prefix_space = byte_level(backend)
    raw_tok = AutoTokenizer.from_pretrained(folder)
    if add_prefix_space:
        tok = RobertaTokenizer.from_pretrained(folder, add_prefix_space=True)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    else:
        tok = raw_tok
    takes_types = "token_type_ids" in inspect.signature(model.forward).parameters

    # The encoder really is the sequence classifier's.
    with torch.no_grad():
        ids = torch.tensor([raw_tok(TEXTS[0])["input_ids"]])
        a = seq.base_model(input_ids=ids).last_hidden_state
        b = model.base_model(input_ids=ids).last_hidden_state
    assert torch.equal(a, b), family

    def logits(enc):
        kwargs = {"input_ids": torch.tensor([enc["input_ids"]]),
                  "attention_mask": torch.tensor([enc["attention_mask"]])}
        if takes_types:
            kwargs["token_type_ids"] = torch.tensor([enc["token_type_ids"]])
        with torch.no_grad():
            return model(**kwargs).logits[0].tolist()

    words = []
    for sentence in SENTENCES:
        enc = tok(sentence, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH,
                  return_token_type_ids=True)
        full = tok(sentence, is_split_into_words=True)
        # tokenizer.json (with add_prefix_space switched on for byte-level BPE) agrees.
        check = backend.encode(sentence, is_pretokenized=True)
        assert check.ids[:len(enc["input_ids"]) - 1] == enc["input_ids"][:-1], family
        words.append({
            "words": sentence,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
            "word_ids": enc.word_ids(),
            "tokens": tok.convert_ids_to_tokens(enc["input_ids"]),
            "truncated": len(full["input_ids"]) > MAX_LENGTH,
            "logits": logits(enc),
        })

    ner = pipeline("token-classification", model=folder, device="cpu",
                   aggregation_strategy="first")
    ner_none = pipeline("token-classification", model=folder, device="cpu",
                        aggregation_strategy="none")
    raw = []
    for text in TEXTS:
        enc = raw_tok(text, return_offsets_mapping=True, return_token_type_ids=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            first = ner(text)
            none = ner_none(text)
        raw.append({
            "text": text,
            "input_ids": enc["input_ids"],
            "token_type_ids": enc["token_type_ids"],
            "offsets": [list(o) for o in enc["offset_mapping"]],
            "word_ids": enc.word_ids(),
            "tokens": raw_tok.convert_ids_to_tokens(enc["input_ids"]),
            "logits": logits(enc),
            "pipeline_first": [{"entity_group": e["entity_group"], "score": float(e["score"]),
                                "word": e["word"], "start": e["start"], "end": e["end"]}
                               for e in first],
            "pipeline_none": [{"entity": e["entity"], "score": float(e["score"]),
                               "index": int(e["index"]), "word": e["word"],
                               "start": e["start"], "end": e["end"]} for e in none],
        })

    with open(os.path.join(out_dir, f"{family}.json"), "w") as f:
        json.dump({
            "family": family,
            "model": model.__class__.__name__,
            "labels": LABELS,
            "head_tensors": head,
            "takes_token_type_ids": takes_types,
            "add_prefix_space": add_prefix_space,
            "raw_add_prefix_space": False,
            "max_length": MAX_LENGTH,
            "words": words,
            "raw": raw,
            "made_with": {"torch": torch.__version__,
                          "transformers": transformers.__version__},
        }, f)
        f.write("\n")
    return head, add_prefix_space


SEQEVAL_CASES = [
    ("perfect match",
     [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"]],
     [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "O", "B-MISC"]]),
    ("missed entity",
     [["B-PER", "I-PER", "O", "O", "B-LOC", "O"]],
     [["B-PER", "I-PER", "O", "O", "O", "O"]]),
    ("wrong type",
     [["B-ORG", "I-ORG", "O", "B-PER"]],
     [["B-LOC", "I-LOC", "O", "B-PER"]]),
    ("boundary errors",
     [["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC", "O"]],
     [["B-PER", "I-PER", "O", "O", "O", "B-LOC", "I-LOC"]]),
    ("entities starting with I- (and I- after another type)",
     [["O", "B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "B-LOC", "O"], ["B-ORG", "I-ORG", "O"]],
     [["O", "I-PER", "I-PER", "O", "I-LOC"], ["B-PER", "I-LOC", "O"], ["I-MISC", "I-ORG", "O"]]),
    ("consecutive B- entities",
     [["B-PER", "B-PER", "O", "B-LOC", "B-LOC", "I-LOC"]],
     [["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC"]]),
    ("entities at the end of a sentence",
     [["O", "O", "B-MISC", "I-MISC"], ["O", "B-ORG"], ["B-PER", "I-PER"]],
     [["O", "O", "B-MISC", "I-MISC"], ["O", "B-ORG"], ["B-PER", "O"]]),
    ("empty predictions",
     [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-MISC"]],
     [["O", "O", "O", "O"], ["O", "O"]]),
    ("no true entities, one predicted",
     [["O", "O", "O"]],
     [["O", "B-MISC", "O"]]),
]
CORRUPT_EVERY = 7
CORRUPT_WITH = ["O", "B-PER", "I-ORG", "B-LOC", "I-MISC", "B-MISC", "I-PER", "B-ORG", "I-LOC"]


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "item"):
        return value.item()
    return value


def seqeval_case(name, y_true, y_pred):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "name": name,
            "y_true": y_true,
            "y_pred": y_pred,
            "report": plain(metrics.classification_report(y_true, y_pred, output_dict=True,
                                                          zero_division=0)),
            "precision": float(metrics.precision_score(y_true, y_pred)),
            "recall": float(metrics.recall_score(y_true, y_pred)),
            "f1": float(metrics.f1_score(y_true, y_pred)),
            "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
            "strict_iob2": {
                "precision": float(metrics.precision_score(y_true, y_pred, mode="strict",
                                                           scheme=IOB2)),
                "recall": float(metrics.recall_score(y_true, y_pred, mode="strict",
                                                     scheme=IOB2)),
                "f1": float(metrics.f1_score(y_true, y_pred, mode="strict", scheme=IOB2)),
            },
        }


def conll_tags(path):
    sentences, current = [], []
    for line in open(path, encoding="utf-8"):
        fields = line.split()
        if fields:
            current.append(fields[3])
        elif current:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def corrupt(sentences):
    """Every CORRUPT_EVERY-th tag (counting across sentences from 1) becomes the next tag of
    CORRUPT_WITH (cycling) that differs from it."""
    out, count, k = [], 0, 0
    for tags in sentences:
        row = []
        for tag in tags:
            count += 1
            if count % CORRUPT_EVERY == 0:
                while CORRUPT_WITH[k % len(CORRUPT_WITH)] == tag:
                    k += 1
                tag = CORRUPT_WITH[k % len(CORRUPT_WITH)]
                k += 1
            row.append(tag)
        out.append(row)
    return out


def make_seqeval(out_dir):
    cases = [seqeval_case(*case) for case in SEQEVAL_CASES]
    conll = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "datasets",
                         "conll2003-sample", "test.conll")
    y_true = conll_tags(conll)
    cases.append(seqeval_case(
        f"datasets/conll2003-sample/test.conll, every {CORRUPT_EVERY}th tag corrupted",
        y_true, corrupt(y_true)))
    with open(os.path.join(out_dir, "seqeval.json"), "w") as f:
        json.dump({
            "cases": cases,
            "corruption": {"every": CORRUPT_EVERY, "cycle": CORRUPT_WITH},
            "made_with": {"seqeval": version("seqeval")},
        }, f, indent=1)
        f.write("\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("native_heads_dir")
    parser.add_argument("out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    for family in FAMILIES:
        head, add_prefix_space = make(family, args.native_heads_dir, args.out)
        print(f"{family}: head {head}, add_prefix_space {add_prefix_space}")
    make_seqeval(args.out)


if __name__ == "__main__":
    main()
