"""Shared fixtures of the attribution tests: a tiny RadEdit-like model with a WordPiece
tokenizer, a selection of report-like captions and the scoring settings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertTokenizer

from memaudit.attribution.spec import AttributionSpec
from memaudit.model.loading import AuditModel, radedit_scheduler
from memaudit.scoring.spec import ScoringSpec
from memaudit.selection import select_prompts
from memaudit.text import compile_markers, prompt_id
from tests.tiny_components import float64_twin, prompt_sensitive_latent_unet, tiny_bert_encoder

CAPTIONS = [
    "Small left pleural effusions, unchanged since ___.",
    "Findings discussed with Dr. ___ at 10:30 on ___.",
    "No acute cardiopulmonary process.",
    "Right lower lobe pneumonia (___).",
    "Per Dr. Zorbak, stable cardiomegaly.",
]
MARKERS = compile_markers(["___"])
HIDDEN = 16
SCORING = {"steps": 4, "guidance": 7.5, "generations": 2, "seed": 3, "batch_size": "auto"}


# Whole words of the WordPiece vocabulary; "effusions" and "Zorbak" need ## pieces.
VOCAB_WORDS = (
    "small left pleural effusion unchanged since findings discussed with dr at 10 30 on no "
    "acute cardiopulmonary process right lower lobe pneumonia per zor stable cardiomegaly "
    "_ . , : ( )"
)


def _vocab() -> list[str]:
    words = sorted(set(VOCAB_WORDS.split()))
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, "##s", "##bak"]


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BertTokenizer:
    folder = tmp_path_factory.mktemp("vocab")
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 24
    return tokenizer


@pytest.fixture(scope="module")
def model(bert_tokenizer: BertTokenizer) -> AuditModel:
    """A tiny latent model with a BERT WordPiece tokenizer (RadEdit-like), float32 CPU."""
    torch.manual_seed(0)
    encoder = tiny_bert_encoder(len(_vocab()), HIDDEN, add_pooling_layer=False)
    return AuditModel(
        kind="radedit",
        tokenizer=bert_tokenizer,
        text_encoder=encoder,
        unet=prompt_sensitive_latent_unet(HIDDEN),
        scheduler=radedit_scheduler(),
        vae=None,
        vae_scaling_factor=1.0,
        image_size=8,
        latent_shape=(4, 8, 8),
        max_length=24,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


@pytest.fixture(scope="module")
def model64(model: AuditModel) -> AuditModel:
    """The same model in float64, for finite differences far above rounding."""
    return float64_twin(model)


@pytest.fixture(scope="module")
def selection() -> pd.DataFrame:
    memorized = pd.DataFrame(
        {
            "prompt_id": [prompt_id(c) for c in CAPTIONS],
            "text": CAPTIONS,
            "d_mem": np.linspace(2.0, 1.0, len(CAPTIONS)),
            "rank": np.arange(1, len(CAPTIONS) + 1),
        }
    )
    table, _ = select_prompts(memorized)
    return table


def _spec(window=(0, 1), **scoring) -> ScoringSpec:
    return AttributionSpec(window=window).scoring_spec({**SCORING, **scoring})
