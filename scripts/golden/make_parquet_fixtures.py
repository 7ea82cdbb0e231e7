"""Writes the small parquet files graft's tests read, with pyarrow as Hugging Face datasets does.

Run from the repository root: python scripts/golden/make_parquet_fixtures.py
Needs pyarrow (not needed by the tests themselves).
"""

import csv
import json
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq

OUT = pathlib.Path("crates/graft-data/tests/data/parquet")
OUT.mkdir(parents=True, exist_ok=True)

# Every column type graft reads, in one file, split over row groups.
texts = ["good tea", "bad coffee", "héllo wörld ☕", "fine", "so so", "great!"]
labels = ["great", "other", "great", "other", "other", "great"]
table = pa.table(
    {
        "text": pa.array(texts, pa.string()),
        "text_large": pa.array(texts, pa.large_string()),
        "text_view": pa.array(texts, pa.string_view()),
        "text_dict": pa.array(texts, pa.string()).dictionary_encode(),
        "label": pa.array(labels, pa.string()),
        "label_dict": pa.array(labels, pa.string()).dictionary_encode(),
        "label_id": pa.array([1, 0, 1, 0, 0, 1], pa.int64()),
        "flag": pa.array([True, False, True, False, False, True]),
        "score": pa.array([4.5, 1.0, 5.0, 3.25, 2.0, 4.75], pa.float64()),
        "tags": pa.array(
            [["tea", "hot"], ["coffee"], [], ["tea"], ["coffee", "hot"], ["tea"]],
            pa.list_(pa.string()),
        ),
        "tag_ids": pa.array([[0, 2], [1], [], [0], [1, 2], [0]], pa.large_list(pa.int32())),
    }
)
for compression in ["snappy", "zstd", "gzip", "lz4", "none"]:
    pq.write_table(table, OUT / f"texts_{compression}.parquet", compression=compression, row_group_size=4)

# A null where a text is expected.
pq.write_table(
    pa.table({"text": pa.array(["a", "b", None]), "label": pa.array(["x", "y", "x"])}),
    OUT / "null_text.parquet",
)

# The fine-foods-mini splits, as a user would convert them with pandas or datasets.
for split in ["train", "test"]:
    with open(f"datasets/fine-foods-mini/{split}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    pq.write_table(
        pa.table({k: pa.array([r[k] for r in rows], pa.string()) for k in rows[0]}),
        OUT / f"fine_foods_mini_{split}.parquet",
    )

# Fashion-MNIST-mini as datasets' Image feature ({bytes, path}) with integer class ids (the
# ClassLabel feature), and a plain binary column of the same images.
image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
for split in ["train", "test"]:
    root = pathlib.Path(f"datasets/fashion-mnist-mini/{split}")
    classes = sorted(p.name for p in root.iterdir())
    files = [(p, classes.index(c.name)) for c in sorted(root.iterdir()) for p in sorted(c.iterdir())]
    images = [{"bytes": p.read_bytes(), "path": p.name} for p, _ in files]
    features = {"image": {"_type": "Image"}, "label": {"names": classes, "_type": "ClassLabel"}}
    schema = pa.schema(
        [("image", image_type), ("label", pa.int64())],
        metadata={"huggingface": json.dumps({"info": {"features": features}})},
    )
    pq.write_table(
        pa.table(
            {"image": pa.array(images, image_type), "label": pa.array([i for _, i in files], pa.int64())},
            schema=schema,
        ),
        OUT / f"fashion_mnist_mini_{split}.parquet",
    )
pq.write_table(
    pa.table({"img": pa.array([p.read_bytes() for p, _ in files[:3]], pa.large_binary())}),
    OUT / "images_binary.parquet",
)
print(sorted(p.name for p in OUT.iterdir()))

# Token classification as datasets publishes CoNLL-2003: `tokens` (a list of strings) and
# `ner_tags` (a list of class ids, a Sequence of ClassLabel in the metadata), from the first 40
# sentences of datasets/conll2003-sample/train.conll.
ner_names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
sentences = [
    [line.split() for line in block.splitlines()]
    for block in pathlib.Path("datasets/conll2003-sample/train.conll").read_text().split("\n\n")
    if block.strip()
][:40]
ner = pa.table(
    {
        "id": pa.array([str(i) for i in range(len(sentences))], pa.string()),
        "tokens": pa.array([[f[0] for f in s] for s in sentences], pa.list_(pa.string())),
        "ner_tags": pa.array(
            [[ner_names.index(f[-1]) for f in s] for s in sentences], pa.list_(pa.int64())
        ),
    }
)
ner_features = {
    "id": {"dtype": "string", "_type": "Value"},
    "tokens": {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"},
    "ner_tags": {"feature": {"names": ner_names, "_type": "ClassLabel"}, "_type": "Sequence"},
}
pq.write_table(
    ner.replace_schema_metadata(
        {"huggingface": json.dumps({"info": {"features": ner_features}})}
    ),
    OUT / "ner_mini.parquet",
)
