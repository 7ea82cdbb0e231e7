"""Load graft's exports in Python (needs torch plus transformers or sentence-transformers).

    python examples/load_export.py runs/fine-foods/export "Great coffee" "Stale and crushed"
"""
import json
import os
import sys

path, texts = sys.argv[1], sys.argv[2:]
labels = json.load(open(os.path.join(path, "labels.json")))
if os.path.exists(os.path.join(path, "modules.json")):
    # Mean or max pooling: a sentence-transformers folder; encode() returns the logits.
    from sentence_transformers import SentenceTransformer
    logits = SentenceTransformer(path, device="cpu").encode(texts, convert_to_tensor=True)
else:
    # CLS through the pooler: a transformers BertForSequenceClassification folder.
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
for text, row in zip(texts, logits.softmax(-1).tolist()):
    print(text, "->", {label: round(p, 3) for label, p in zip(labels, row)})
