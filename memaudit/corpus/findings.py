"""Which findings each demo study has: the severity matrix that report text and image share.

A study's findings are one row of integers over :data:`FINDING_NAMES` (0 = absent, 1..3 =
mild, moderate, severe; devices are 0 or 1). The report grammar words the row, the phantom
renderer draws it and ``studies.parquet`` lists it as ``labels``, so text and image of a study
always agree. Ordinary studies are normal more than half of the time; planted captions always
carry two or three findings so that each one is specific.
"""

from __future__ import annotations

import numpy as np

#: Image-level finding names, the columns of the severity matrix, in ``labels`` order.
FINDING_NAMES: tuple[str, ...] = (
    "cardiomegaly",
    "effusion_left",
    "effusion_right",
    "pneumothorax_left",
    "pneumothorax_right",
    "consolidation_left",
    "consolidation_right",
    "atelectasis",
    "edema",
    "et_tube",
    "ng_tube",
    "central_line",
    "pacemaker",
)
#: Column of each finding in the severity matrix.
FINDING_COLUMN = {name: i for i, name in enumerate(FINDING_NAMES)}

# Finding *types* sampled for a study (sides are drawn afterwards) and their relative weights.
_TYPES = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "consolidation",
    "atelectasis",
    "edema",
    "et_tube",
    "ng_tube",
    "central_line",
    "pacemaker",
)
_TYPE_WEIGHTS = np.array([0.15, 0.20, 0.06, 0.12, 0.15, 0.12, 0.05, 0.05, 0.05, 0.05])
_P_NORMAL = 0.55
_N_FINDINGS_P = np.array([0.5, 0.3, 0.15, 0.05])  # 1, 2, 3 or 4 findings in abnormal studies
_SEVERITY_P = np.array([0.5, 0.35, 0.15])  # mild, moderate, severe


def sample_severity(rng: np.random.Generator, n: int, force_k: tuple[int, int] | None = None):
    """Severity matrix [n, len(FINDING_NAMES)] (0 = absent, 1..3) for n studies.

    Ordinary studies are normal with probability ``_P_NORMAL``; ``force_k=(lo, hi)`` instead
    draws between lo and hi distinct finding types for every study (planted captions).
    """
    n_types = len(_TYPES)
    # Gumbel top-k: the first k columns of this order are k distinct types drawn by weight.
    gumbel = rng.gumbel(size=(n, n_types))
    keys = np.log(_TYPE_WEIGHTS)[None, :] + gumbel
    order = np.argsort(-keys, axis=1, kind="stable")
    if force_k is None:
        k = 1 + rng.choice(len(_N_FINDINGS_P), size=n, p=_N_FINDINGS_P)
        k[rng.random(n) < _P_NORMAL] = 0
    else:
        k = rng.integers(force_k[0], force_k[1] + 1, size=n)
    severity_draw = 1 + rng.choice(3, size=(n, n_types), p=_SEVERITY_P)
    side_draw = rng.random((n, n_types))
    sev = np.zeros((n, len(FINDING_NAMES)), dtype=np.int8)
    chosen = np.zeros((n, n_types), dtype=bool)
    rows = np.arange(n)
    for rank in range(n_types):
        active = k > rank
        chosen[rows[active], order[active, rank]] = True
    for t, name in enumerate(_TYPES):
        on = chosen[:, t]
        s = severity_draw[:, t].astype(np.int8)
        u = side_draw[:, t]
        if name in ("effusion", "pneumothorax", "consolidation"):
            p_both = {"effusion": 0.3, "pneumothorax": 0.05, "consolidation": 0.1}[name]
            left = on & ((u < (1 - p_both) / 2) | (u >= 1 - p_both))
            right = on & (u >= (1 - p_both) / 2)
            sev[left, FINDING_COLUMN[f"{name}_left"]] = s[left]
            sev[right, FINDING_COLUMN[f"{name}_right"]] = s[right]
        elif name in ("et_tube", "ng_tube", "central_line", "pacemaker"):
            sev[on, FINDING_COLUMN[name]] = 1
        else:
            sev[on, FINDING_COLUMN[name]] = s[on]
    return sev


def finding_labels(row: list[int]) -> str:
    """The ``labels`` entry of one severity row: present findings, comma-separated."""
    return ",".join(FINDING_NAMES[i] for i, v in enumerate(row) if v)
