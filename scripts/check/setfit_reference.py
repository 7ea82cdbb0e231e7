"""The Python reference for graft's SetFit-style two-step recipe: the real `setfit` library's
contrastive fine-tuning of a sentence-transformers body followed by a logistic-regression head,
scored on the same test file.

    python scripts/check/setfit_reference.py MODEL_DIR TRAIN_CSV TEST_CSV SEED [ITERATIONS] [EPOCHS] [BATCH] [LR]

    e.g. python scripts/check/setfit_reference.py models/all-MiniLM-L6-v2 \
             datasets/fine-foods-fewshot/train.csv datasets/fine-foods/testing_data.csv 42

Defaults: ITERATIONS=20 (setfit's num_iterations), EPOCHS=1, BATCH=16, LR=2e-5
(body_learning_rate). Both CSV files have a `review` column (the text) and a `score` column (the
label, e.g. great/other).

Step one: `SetFitModel.from_pretrained(MODEL_DIR)` (its default head, sklearn's
LogisticRegression()) trained by setfit's Trainer with TrainingArguments(num_iterations,
num_epochs, batch_size, body_learning_rate, seed) and setfit's default CosineSimilarityLoss: setfit
builds num_iterations * len(train) positive and as many negative pairs (label 1.0 for the same
class, 0.0 otherwise), the body is fine-tuned on them, then the head is fit on the body's
embeddings of the training texts. Step two: the model predicts TEST_CSV.

For comparison, `head_only_accuracy` is the same LogisticRegression fit on the embeddings of the
untouched body (`model.model_body.encode` before any contrastive step), so the effect of the
contrastive step is visible.

Prints one JSON line: seed, accuracy, head_only_accuracy, train_pairs (the number of contrastive
pairs setfit generated), train_steps and seconds (wall time of the whole run). The versions of
setfit, sentence-transformers, transformers and torch, and the trainer settings the body was
trained with (optimizer, schedule, warmup, clipping, weight decay, max_seq_length), go to stderr.
Runs on the CPU with torch.set_num_threads(THREADS), THREADS from the environment (default 1).
Needs setfit (with its datasets dependency), sentence-transformers, transformers, torch and
scikit-learn; not a test dependency.
"""

import contextlib
import csv
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import sentence_transformers  # noqa: E402
import setfit  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from datasets import Dataset  # noqa: E402
from setfit import SetFitModel, Trainer, TrainingArguments  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402


def read(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["review"] for r in rows], [r["score"] for r in rows]


def accuracy(pred, gold):
    return float(np.mean([str(p) == g for p, g in zip(pred, gold)]))


def main(argv):
    if len(argv) < 4 or len(argv) > 8:
        sys.exit(__doc__)
    model_dir, train_csv, test_csv = argv[0], argv[1], argv[2]
    seed = int(argv[3])
    iterations = int(argv[4]) if len(argv) > 4 else 20
    epochs = int(argv[5]) if len(argv) > 5 else 1
    batch = int(argv[6]) if len(argv) > 6 else 16
    lr = float(argv[7]) if len(argv) > 7 else 2e-5

    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    print(
        f"setfit {setfit.__version__}, sentence-transformers {sentence_transformers.__version__}, "
        f"transformers {transformers.__version__}, torch {torch.__version__}",
        file=sys.stderr,
    )

    start = time.time()
    x_train, y_train = read(train_csv)
    x_test, y_test = read(test_csv)

    model = SetFitModel.from_pretrained(model_dir, device="cpu")

    # The untrained body + a logistic regression head: no contrastive step.
    head = LogisticRegression()
    head.fit(model.model_body.encode(x_train), y_train)
    head_only = accuracy(head.predict(model.model_body.encode(x_test)), y_test)

    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(
            output_dir=out_dir,
            num_iterations=iterations,
            num_epochs=epochs,
            batch_size=batch,
            body_learning_rate=lr,
            seed=seed,
            report_to="none",
            save_strategy="no",
            show_progress_bar=False,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict({"text": x_train, "label": y_train}),
        )
        with contextlib.redirect_stdout(sys.stderr):  # the trainer's log dicts; stdout is the JSON line
            trainer.train()
        st = trainer.st_trainer
        train_pairs = len(st.train_dataset)
        train_steps = int(st.state.global_step)
        print(
            f"body trained with optim={st.args.optim} lr_scheduler={st.args.lr_scheduler_type} "
            f"warmup_steps={st.args.warmup_steps} (of {train_steps}) max_grad_norm={st.args.max_grad_norm} "
            f"weight_decay={st.args.weight_decay} batch_sampler={st.args.batch_sampler} "
            f"max_seq_length={model.model_body.max_seq_length} "
            f"normalize_embeddings={model.normalize_embeddings} "
            f"body modules={[type(m).__name__ for m in model.model_body]}",
            file=sys.stderr,
        )

    pred = model.predict(x_test)
    result = {
        "seed": seed,
        "accuracy": accuracy(pred, y_test),
        "head_only_accuracy": head_only,
        "train_pairs": train_pairs,
        "train_steps": train_steps,
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
