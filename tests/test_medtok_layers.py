"""Inference never imports training: tokenizing and evaluating a MedTok checkpoint loads neither
`medtok.train` nor accelerate (checked in a fresh interpreter, where sys.modules starts empty)."""

import json
import subprocess
import sys

from medbase.paths import PROJECT_ROOT

INFERENCE = ["medtok.tokenizer", "medtok.evaluate", "medtok.loading", "medtok.model.features", "medtok.splits",
             "medtok.graph_edits", "medtok.baselines", "medtok.probe"]
TRAINING = ["medtok.train", "medtok.train_cli", "medtok.ablations", "medtok.intrinsic", "accelerate"]


def test_inference_modules_do_not_import_training_code():
    code = (f"import importlib, json, sys\nfor m in {INFERENCE!r}: importlib.import_module(m)\n"
            f"print(json.dumps([m for m in {TRAINING!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
