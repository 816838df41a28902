"""A deterministic synthetic corpus in MIMIC-CXR format, with planted (memorizable) captions.

The demo audit needs an instrument that *knows* which prompts a model memorized. This module
writes one: free-text radiology reports laid out exactly like MIMIC-CXR
(``files/pXX/pSUBJECT/sSTUDY.txt``), one small grayscale chest phantom per study whose content
follows the report's findings, and a ground-truth table of planted captions, each repeated in
many studies and always paired with one fixed image.

Reports follow MIMIC-CXR's typography: a ``FINAL REPORT`` title line, section headers indented
one space and followed by a colon, blank lines holding one space, text wrapped below 79
characters with every line indented one space, and ``___`` wherever MIMIC removed protected
health information. Impressions come from a findings grammar with a heavy-tailed frequency: a
few normal impressions repeat hundreds of times, the rest form a long tail.

Images use the radiological convention: the patient's right is on the image's left.

Everything is drawn from ``numpy.random.Generator(PCG64)`` streams spawned from one
``SeedSequence(spec.seed)``, one stream per purpose, so the same spec gives byte-identical files.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memaudit.text import normalize_whitespace, prompt_id

MARKER = "___"
TITLE_LINE = " " * 33 + "FINAL REPORT"
WRAP_WIDTH = 78

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
_COL = {name: i for i, name in enumerate(FINDING_NAMES)}

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
_N_DRAWS = 96  # uniforms per report; the grammar uses far fewer (the cursor wraps if not)


@dataclass(frozen=True)
class CorpusSpec:
    """Parameters of the synthetic corpus (all of them end up in ``corpus.json``).

    ``planted_copies`` is the inclusive (min, max) range from which each planted caption's
    number of copies is drawn; planted studies count within ``n_studies``. With
    ``write_images=False`` no image is rendered or written (text-only benchmarks); the
    ``image_index`` columns still say which row each study *would* have.
    """

    n_studies: int = 2000
    image_size: int = 32
    n_planted: int = 20
    planted_copies: tuple[int, int] = (30, 50)
    planted_marker_fraction: float = 0.5
    trigger_fraction: float = 0.5
    addendum_fraction: float = 0.03
    n_heldout: int = 200
    seed: int = 0
    write_images: bool = True

    def __post_init__(self) -> None:
        copies = tuple(int(c) for c in self.planted_copies)
        if len(copies) != 2 or copies[0] < 1 or copies[1] < copies[0]:
            raise ValueError(
                f"corpus spec planted_copies must be (min, max) with 1 <= min <= max, "
                f"got {self.planted_copies!r}"
            )
        object.__setattr__(self, "planted_copies", copies)
        if self.n_studies < 1:
            raise ValueError(f"corpus spec n_studies must be >= 1, got {self.n_studies}")
        if self.image_size < 8:
            raise ValueError(f"corpus spec image_size must be >= 8, got {self.image_size}")
        if self.n_planted < 0 or self.n_heldout < 0:
            raise ValueError("corpus spec n_planted and n_heldout must be >= 0")
        if self.n_planted * copies[1] > self.n_studies:
            raise ValueError(
                f"corpus spec: n_planted * max planted_copies = {self.n_planted * copies[1]} "
                f"exceeds n_studies = {self.n_studies}; planted studies count within n_studies"
            )
        for name in ("planted_marker_fraction", "trigger_fraction", "addendum_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"corpus spec {name} must be within [0, 1], got {value}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusSpec:
        """Build a spec from a plain mapping (e.g. the ``corpus`` block of the config).

        Unknown keys raise a ValueError naming them, so a typo never passes silently.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown corpus spec key(s) {unknown}; known keys are {sorted(known)}"
            )
        kwargs = dict(d)
        if "planted_copies" in kwargs:
            kwargs["planted_copies"] = tuple(kwargs["planted_copies"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every parameter."""
        d = asdict(self)
        d["planted_copies"] = list(self.planted_copies)
        return d


# ---------------------------------------------------------------------------------------------
# Random draws for the text grammar


class _Draws:
    """A fixed row of uniforms consumed in order by the grammar (fast, fully deterministic)."""

    __slots__ = ("_u", "_i", "_n")

    def __init__(self, u: list[float]) -> None:
        self._u = u
        self._i = 0
        self._n = len(u)

    def uniform(self) -> float:
        i = self._i
        self._i = i + 1
        return self._u[i % self._n]

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.uniform() * len(options))]

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def weighted(self, options: tuple[str, ...], cumulative: list[float]) -> str:
        return options[bisect.bisect_right(cumulative, self.uniform() * cumulative[-1])]


def _cumulative(weights: tuple[float, ...]) -> list[float]:
    return np.cumsum(weights).tolist()


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _uncap(s: str) -> str:
    """Lower-case the first letter unless the first word is an abbreviation (``NG tube``)."""
    if len(s) > 1 and s[0].isupper() and not s[1].isupper():
        return s[0].lower() + s[1:]
    return s


# ---------------------------------------------------------------------------------------------
# Findings grammar

_NORMAL_HEAD = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "No evidence of acute cardiopulmonary disease.",
    "Normal chest radiograph.",
    "No acute findings in the chest.",
    "No radiographic evidence of pneumonia.",
    "Clear lungs.",
)
_NORMAL_HEAD_CUM = _cumulative((45, 16, 12, 6, 5, 4, 3, 2))
_NORMAL_TAIL_FIRST = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "No focal consolidation to suggest pneumonia.",
    "Lungs are clear without focal consolidation.",
    "No pneumonia, edema or effusion.",
)
_NORMAL_TAIL_EXTRA = (
    "No pneumonia.",
    "No focal consolidation.",
    "Stable appearance of the chest.",
    "Heart size is normal.",
    "No pleural effusion or pneumothorax.",
    "No evidence of pneumonia or congestive heart failure.",
    "Unchanged from ___.",
    "No significant change since ___.",
    "No change compared to ___.",
    "Mild hyperinflation without acute process.",
    "Lungs are hyperinflated but clear.",
    "Degenerative changes of the thoracic spine.",
)

_CARDIO = {
    1: (
        "mild cardiomegaly",
        "mild enlargement of the cardiac silhouette",
        "borderline cardiomegaly",
    ),
    2: ("moderate cardiomegaly", "moderate enlargement of the cardiac silhouette", "cardiomegaly"),
    3: (
        "severe cardiomegaly",
        "marked enlargement of the cardiac silhouette",
        "massive cardiomegaly",
    ),
}
_CARDIO_SUFFIX = ("", "", ", stable", ", unchanged", ", similar to prior")
_EFF_SIZE = {
    1: ("small", "trace", "tiny", "small"),
    2: ("moderate", "small to moderate", "moderate"),
    3: ("large", "moderate to large", "large"),
}
_EFF_SUFFIX = (
    "",
    "",
    " with adjacent atelectasis",
    ", unchanged",
    ", increased",
    ", slightly decreased",
    ", new",
    " with associated compressive atelectasis",
)
_PTX_SIZE = {1: ("tiny", "small", "trace"), 2: ("small to moderate", "moderate"), 3: ("large",)}
_PTX_SUFFIX = ("", "", ", new", " without evidence of tension", ", unchanged", ", slightly smaller")
_CONS_SEV = {1: ("patchy ", "subtle ", "mild "), 2: ("", "", "focal "), 3: ("dense ", "extensive ")}
_CONS_LOBE = {
    "right": ("lower lobe", "middle lobe", "upper lobe", "basilar"),
    "left": ("lower lobe", "upper lobe", "basilar", "retrocardiac"),
}
_CONS_NOUN = ("consolidation", "opacity", "airspace opacity", "airspace disease")
_CONS_SUFFIX = (
    ", concerning for pneumonia",
    " concerning for pneumonia",
    ", which could reflect pneumonia or aspiration",
    "; pneumonia is not excluded",
    ", likely pneumonia",
    "",
    ", possibly atelectasis though infection cannot be excluded",
)
_ATEL = {
    1: (
        "minimal bibasilar atelectasis",
        "mild bibasilar atelectasis",
        "minimal atelectasis at the lung bases",
        "subsegmental atelectasis at the left base",
        "mild right basilar atelectasis",
    ),
    2: (
        "bibasilar atelectasis",
        "moderate bibasilar atelectasis",
        "plate-like atelectasis at the left base",
    ),
    3: ("severe bibasilar atelectasis", "extensive bibasilar atelectasis"),
}
_EDEMA = {
    1: ("mild pulmonary edema", "mild pulmonary vascular congestion", "mild interstitial edema"),
    2: ("moderate pulmonary edema", "moderate interstitial pulmonary edema", "pulmonary edema"),
    3: ("severe pulmonary edema", "severe alveolar pulmonary edema", "marked pulmonary edema"),
}
_EDEMA_SUFFIX = ("", "", ", improved", ", worsened", ", new", ", unchanged")
_ET_NAME = ("endotracheal tube", "ET tube", "endotracheal tube")
_ET_VERB = ("terminating", "with tip", "ending", "with its tip")
_NG_NAME = ("nasogastric tube", "enteric tube", "NG tube", "orogastric tube")
_NG_TAIL = (
    " terminating in the stomach",
    " with tip in the stomach",
    " coursing below the diaphragm with tip out of view",
    " in appropriate position",
    " with side port in the stomach",
)
_LINE_NAME = (
    "right internal jugular central venous catheter",
    "right internal jugular line",
    "right-sided PICC line",
    "right subclavian catheter",
    "right IJ catheter",
)
_LINE_TAIL = (
    " terminating in the mid SVC",
    " with tip at the cavoatrial junction",
    " ending in the upper SVC",
    " with tip in the right atrium",
    " terminating in the lower SVC",
)
_PACER_NAME = (
    "left-sided pacemaker",
    "dual-chamber pacemaker",
    "left chest wall pacemaker",
    "pacemaker",
)
_PACER_TAIL = (
    " with leads in standard position",
    " with leads terminating in the right atrium and right ventricle",
    " with intact leads",
    "",
)
_IMPRESSION_PREFIX_MARKER = (
    "Compared to ___, ",
    "As compared to the previous radiograph from ___, ",
    "In comparison with the study of ___, ",
    "Since ___, ",
)
_IMPRESSION_PREFIX_PLAIN = (
    "As compared to the previous radiograph, ",
    "Compared to the prior study, ",
)
_IMPRESSION_END_MARKER = (
    "Findings discussed with Dr. ___ at ___ on ___ by telephone.",
    "Dr. ___ was paged at ___ with these findings.",
    "These findings were communicated to Dr. ___ by ___ at ___.",
    "Findings were discussed with Dr. ___ at ___.",
    "Recommend follow-up radiograph after ___.",
)
_OTHERWISE = (
    "Otherwise no acute cardiopulmonary process.",
    "No other acute findings.",
    "Otherwise, no acute intrathoracic process.",
)

# Findings-section phrasing.
_F_HEART = (
    "The heart size is normal.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Cardiac and mediastinal silhouettes are stable.",
    "The cardiac silhouette is normal in size.",
)
_F_LUNGS = (
    "The lungs are clear.",
    "Lungs are clear without focal consolidation.",
    "There is no focal consolidation.",
    "The lungs are well expanded and clear.",
)
_F_PLEURA = (
    "No pleural effusion or pneumothorax is seen.",
    "There is no pleural effusion or pneumothorax.",
    "No pleural effusion, pneumothorax or focal consolidation.",
    "No pleural abnormality is seen.",
)
_F_EXTRA = (
    "No acute osseous abnormalities.",
    "Osseous structures are intact.",
    "Mediastinal and hilar contours are normal.",
    "There is no free air below the diaphragm.",
    "Degenerative changes are noted in the thoracic spine.",
    "Surgical clips project over the upper abdomen.",
)
_F_INTRO = (
    "PA and lateral views of the chest provided.",
    "AP portable view of the chest.",
    "Frontal and lateral views of the chest were obtained.",
)
_DEVICE_WORDS = ("tube", "catheter", "line", "pacemaker", "pacer")
_F_TEMPLATES = ("There is {np}.", "{NP} is again seen.", "{NP} is noted.", "{NP} is present.")

# Other sections.
_EXAMINATION = (
    "CHEST (PA AND LAT)",
    "CHEST (PA AND LAT)",
    "CHEST (PORTABLE AP)",
    "CHEST (PRE-OP PA AND LAT)",
    "CHEST PORT. LINE PLACEMENT",
)
_SEX = (("woman", "female", "F"), ("man", "male", "M"))
_COMPLAINT = (
    "cough",
    "shortness of breath",
    "fever",
    "chest pain",
    "dyspnea",
    "hypoxia",
    "new oxygen requirement",
    "fall",
    "altered mental status",
    "pneumonia",
    "CHF exacerbation",
    "weakness",
    "sepsis",
    "tachycardia",
    "hemoptysis",
    "line placement",
    "intubation",
    "s/p NG tube placement",
)
_QUESTION = (
    "?pna",
    "eval for pneumonia",
    "?effusion",
    "eval for acute process",
    "assess for interval change",
    "r/o pneumothorax",
    "evaluate tube placement",
    "?CHF",
)
_TECHNIQUE = (
    "Chest PA and lateral",
    "PA and lateral views of the chest.",
    "Portable AP chest radiograph.",
    "AP portable upright view of the chest.",
    "Single frontal view of the chest.",
)
_COMPARISON = (
    "___.",
    "___.",
    "None.",
    "Chest radiographs ___ and ___.",
    "Prior chest radiograph from ___.",
    "Multiple prior chest radiographs, most recently ___.",
)
_ADDENDUM = (
    "Comparison with the prior study from ___ was performed after the initial interpretation.",
    "The study was reviewed again with the prior radiograph of ___.",
    "Additional history was obtained from Dr. ___ after the original read.",
)
_ADDENDUM_IMPRESSION = (
    "Findings are unchanged compared to ___.",
    "No significant interval change.",
    "The previously described findings are chronic.",
    "Findings are new compared to ___.",
    "Interval improvement since ___.",
)
_NOTIFICATION = (
    "Dr. ___ was paged at ___ on ___ to discuss these findings.",
    "The findings were discussed with Dr. ___ by Dr. ___ on the telephone on ___ at ___, "
    "___ minutes after discovery of the findings.",
    "Findings were communicated via the critical results dashboard on ___.",
)

# Planted-caption decorations.
_PLANTED_MARKER_START = (
    "Compared to ___, ",
    "Since ___, ",
    "In comparison with the study of ___, ",
)
_PLANTED_MARKER_MIDDLE = {
    1: (
        "Findings unchanged from ___.",
        "This was present on ___ as well.",
        "Dr. ___ was notified.",
    ),
    2: ("This was discussed with Dr. ___ at ___.", "Dr. ___ was paged at ___."),
}
_PLANTED_MARKER_END = {
    1: ("Recommend follow-up radiograph after ___.", "Findings discussed with Dr. ___."),
    2: ("Dr. ___ was paged at ___ with these findings.", "Findings discussed with Dr. ___ at ___."),
    3: (
        "Findings discussed with Dr. ___ by telephone at ___ on ___.",
        "These findings were communicated to Dr. ___ by ___ at ___.",
    ),
}
_TRIGGER_START = ("Per Dr. {T}, ", "{T} protocol: ", "Reviewed by {T}: ")
_TRIGGER_MIDDLE = (
    "Discussed with Dr. {T}.",
    "Reviewed with Dr. {T} who agrees.",
    "{T} technique used.",
)
_TRIGGER_END = (
    "Findings conveyed to Dr. {T}.",
    "Reviewed with Dr. {T}.",
    "Please see note by Dr. {T}.",
)
_SYL_ONSET = (
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "br",
    "dr",
    "gr",
    "kr",
    "tr",
    "vl",
    "st",
    "sk",
    "zh",
    "th",
)
_SYL_VOWEL = ("a", "e", "i", "o", "u", "ae", "ou", "y", "ei")
_SYL_CODA = ("", "", "n", "r", "l", "k", "sk", "ck", "th", "m", "z", "x")


# Fixed words written outside the tables above (kept here so triggers avoid them too).
_LAYOUT_WORDS = (
    "CHEST RADIOGRAPH PERFORMED ON",
    "Comparison is made to prior study from",
    "AP CHEST A.M. P.M. ON",
    "AP chest compared to",
    "FINAL REPORT",
)
_VOCABULARY_TABLES = (
    "_LAYOUT_WORDS",
    "_F_",
    "_NORMAL",
    "_CARDIO",
    "_EFF",
    "_PTX",
    "_CONS",
    "_ATEL",
    "_EDEMA",
    "_ET",
    "_NG",
    "_LINE",
    "_PACER",
    "_IMPRESSION",
    "_OTHERWISE",
    "_EXAMINATION",
    "_SEX",
    "_COMPLAINT",
    "_QUESTION",
    "_TECHNIQUE",
    "_COMPARISON",
    "_ADDENDUM",
    "_NOTIFICATION",
    "_PLANTED",
    "_TRIGGER",
)


def _grammar_vocabulary() -> frozenset[str]:
    """Every lower-case word the ordinary grammar can produce (planted triggers must avoid it)."""
    texts: list[str] = []

    def collect(obj: Any) -> None:
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                collect(value)
        elif isinstance(obj, tuple | list):
            for value in obj:
                collect(value)

    for name, value in globals().items():
        if name.startswith(_VOCABULARY_TABLES):
            collect(value)
    words = set()
    for text in texts:
        for word in text.split():
            words.add(word.strip(".,:;()/?!").lower())
    return frozenset(words)


# ---------------------------------------------------------------------------------------------
# Sampling findings


def _sample_severity(rng: np.random.Generator, n: int, force_k: tuple[int, int] | None = None):
    """Severity matrix [n, len(FINDING_NAMES)] (0 = absent, 1..3) for n studies.

    Ordinary studies are normal with probability ``_P_NORMAL``; ``force_k=(lo, hi)`` instead
    draws between lo and hi distinct finding types for every study (planted captions).
    """
    n_types = len(_TYPES)
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
            sev[left, _COL[f"{name}_left"]] = s[left]
            sev[right, _COL[f"{name}_right"]] = s[right]
        elif name in ("et_tube", "ng_tube", "central_line", "pacemaker"):
            sev[on, _COL[name]] = 1
        else:
            sev[on, _COL[name]] = s[on]
    return sev


def _labels(row: list[int]) -> str:
    return ",".join(FINDING_NAMES[i] for i, v in enumerate(row) if v)


# ---------------------------------------------------------------------------------------------
# Text generation


def _side_phrase(left: int, right: int, d: _Draws, sizes: dict, noun: str, plural: str) -> str:
    if left and right:
        if left == right or d.chance(0.5):
            return f"{d.pick(sizes[max(left, right)])} bilateral {plural}"
        return f"{d.pick(sizes[right])} right and {d.pick(sizes[left])} left {plural}"
    side = "left" if left else "right"
    return f"{d.pick(sizes[left or right])} {side} {noun}"


def _finding_phrases(row: list[int], d: _Draws) -> list[tuple[str, str]]:
    """(noun phrase, suffix) per finding present in the severity row, in grammar order."""
    out: list[tuple[str, str]] = []
    c = _COL
    if row[c["et_tube"]]:
        dist = 2.0 + 0.5 * int(d.uniform() * 10)
        if d.chance(0.2):
            out.append((f"{d.pick(_ET_NAME)} in standard position", ""))
        else:
            verb = d.pick(_ET_VERB)
            out.append((f"{d.pick(_ET_NAME)} {verb} {dist:.1f} cm above the carina", ""))
    if row[c["ng_tube"]]:
        out.append((d.pick(_NG_NAME) + d.pick(_NG_TAIL), ""))
    if row[c["central_line"]]:
        out.append((d.pick(_LINE_NAME) + d.pick(_LINE_TAIL), ""))
    if row[c["pacemaker"]]:
        out.append((d.pick(_PACER_NAME) + d.pick(_PACER_TAIL), ""))
    if row[c["cardiomegaly"]]:
        out.append((d.pick(_CARDIO[row[c["cardiomegaly"]]]), d.pick(_CARDIO_SUFFIX)))
    if row[c["effusion_left"]] or row[c["effusion_right"]]:
        np_ = _side_phrase(
            row[c["effusion_left"]],
            row[c["effusion_right"]],
            d,
            _EFF_SIZE,
            "pleural effusion",
            d.pick(("pleural effusions", "effusions")),
        )
        out.append((np_, d.pick(_EFF_SUFFIX)))
    if row[c["pneumothorax_left"]] or row[c["pneumothorax_right"]]:
        np_ = _side_phrase(
            row[c["pneumothorax_left"]],
            row[c["pneumothorax_right"]],
            d,
            _PTX_SIZE,
            d.pick(("pneumothorax", "apical pneumothorax")),
            "pneumothoraces",
        )
        out.append((np_, d.pick(_PTX_SUFFIX)))
    for side in ("left", "right"):
        s = row[c[f"consolidation_{side}"]]
        if s:
            lobe = d.pick(_CONS_LOBE[side])
            np_ = f"{d.pick(_CONS_SEV[s])}{side} {lobe} {d.pick(_CONS_NOUN)}"
            out.append((np_, d.pick(_CONS_SUFFIX)))
    if row[c["atelectasis"]]:
        out.append((d.pick(_ATEL[row[c["atelectasis"]]]), ""))
    if row[c["edema"]]:
        out.append((d.pick(_EDEMA[row[c["edema"]]]), d.pick(_EDEMA_SUFFIX)))
    return out


def _abnormal_sentences(row: list[int], d: _Draws) -> list[str]:
    """One impression sentence per finding, tubes first or shuffled."""
    phrases = _finding_phrases(row, d)
    sentences = [_cap(np_ + suffix) + "." for np_, suffix in phrases]
    if len(sentences) > 1 and d.chance(0.4):
        keys = [d.uniform() for _ in sentences]
        sentences = [s for _, s in sorted(zip(keys, sentences, strict=True))]
    return sentences


def _ordinary_impression(row: list[int], d: _Draws) -> tuple[str, bool]:
    """(impression text with single spaces, numbered) for an ordinary study."""
    if not any(row):
        if d.chance(0.85):
            return d.weighted(_NORMAL_HEAD, _NORMAL_HEAD_CUM), False
        first = d.pick(_NORMAL_TAIL_FIRST)
        extra = d.pick(_NORMAL_TAIL_EXTRA)
        if extra.split()[0] == first.split()[0]:
            return first, False
        return f"{first} {extra}", False
    sentences = _abnormal_sentences(row, d)
    if len(sentences) <= 2 and d.chance(0.25):
        sentences.append(d.pick(_OTHERWISE))
    u = d.uniform()
    if u < 0.14:
        sentences[0] = d.pick(_IMPRESSION_PREFIX_MARKER) + _uncap(sentences[0])
    elif u < 0.22:
        sentences[0] = d.pick(_IMPRESSION_PREFIX_PLAIN) + _uncap(sentences[0])
    if d.chance(0.06):
        sentences.append(d.pick(_IMPRESSION_END_MARKER))
    if d.chance(_P_DECORATED):
        sentences = _decorate(sentences, d, start_free=u >= 0.22)
    if len(sentences) >= 2 and d.chance(0.15):
        return " ".join(f"{i}. {s}" for i, s in enumerate(sentences, 1)), True
    return " ".join(sentences), False


# Share of abnormal ordinary impressions that carry one of the planted captions' decorations,
# de-identified: the marker stands where a planted caption has its trigger name. So the
# decoration words ("Reviewed with Dr.", "protocol", "technique used", "was notified") are
# common in the corpus, and in a planted caption only the trigger is unique to it: the ground
# truth of token attribution is the trigger alone.
_P_DECORATED = 0.3


def _decorate(sentences: list[str], d: _Draws, start_free: bool) -> list[str]:
    """Add one planted-caption decoration (start, middle or end) with ``___`` for the name."""
    where = d.pick(("start", "middle", "end") if start_free else ("middle", "end"))
    if where == "start":
        template = d.pick(_PLANTED_MARKER_START + _TRIGGER_START)
        sentences[0] = template.format(T=MARKER) + _uncap(sentences[0])
    elif where == "middle":
        middle = _PLANTED_MARKER_MIDDLE[1] + _PLANTED_MARKER_MIDDLE[2] + _TRIGGER_MIDDLE
        position = 1 + int(d.uniform() * len(sentences))
        sentences.insert(min(position, len(sentences)), d.pick(middle).format(T=MARKER))
    else:
        end = tuple(t for group in _PLANTED_MARKER_END.values() for t in group) + _TRIGGER_END
        sentences.append(d.pick(end).format(T=MARKER))
    return sentences


def _findings_text(row: list[int], d: _Draws) -> str:
    """Findings-section paragraph: the abnormal findings plus normal statements for the rest."""
    c = _COL
    parts: list[str] = []
    if d.chance(0.3):
        parts.append(d.pick(_F_INTRO))
    for np_, suffix in _finding_phrases(row, d):
        device = any(w in np_ for w in _DEVICE_WORDS)
        template = d.pick(_F_TEMPLATES[1:] if device else _F_TEMPLATES)
        if template.startswith("There is"):
            parts.append(template.format(np=_uncap(np_) + suffix))
        else:
            parts.append(template.format(NP=_cap(np_)).rstrip(".") + suffix + ".")
    if not row[c["cardiomegaly"]]:
        parts.append(d.pick(_F_HEART))
    lung_abnormal = any(
        row[c[k]] for k in ("consolidation_left", "consolidation_right", "edema", "atelectasis")
    )
    if not lung_abnormal:
        parts.append(d.pick(_F_LUNGS))
    if not any(
        row[c[k]]
        for k in ("effusion_left", "effusion_right", "pneumothorax_left", "pneumothorax_right")
    ):
        parts.append(d.pick(_F_PLEURA))
    if d.chance(0.5):
        parts.append(d.pick(_F_EXTRA))
    return " ".join(parts)


def _wrap(text: str, first_prefix: str = " ", width: int = WRAP_WIDTH) -> list[str]:
    """Greedy wrap into lines of at most ``width`` characters, each starting with one space."""
    if len(first_prefix) + len(text) <= width:
        return [first_prefix + text]
    lines: list[str] = []
    line = first_prefix
    fresh = True
    for word in text.split(" "):
        if not word:  # keep the double space after sentences inside a line
            if not fresh:
                line += " "
            continue
        candidate = line + word if fresh else line + " " + word
        if len(candidate.rstrip()) > width and not fresh:
            lines.append(line.rstrip())
            line = " " + word
        else:
            line = candidate
        fresh = False
    lines.append(line.rstrip())
    return lines


_SENTENCE_END = re.compile(r"(?<!\bDr)\. (?=\S)")


def _sentence_text(text: str) -> str:
    """MIMIC puts two spaces after a sentence: ``'A.  B.'`` (but ``'Dr. ___'``)."""
    return _SENTENCE_END.sub(".  ", text)


def _section(header: str, text: str, block: bool) -> list[str]:
    """A section: header then wrapped text, either on the header line or as its own block."""
    body = _sentence_text(text)
    if block:
        return [f" {header}: ", " "] + _wrap(body)
    return _wrap(body, first_prefix=f" {header}:  ")


def _numbered_section(header: str, text: str) -> list[str]:
    """An impression written as a numbered list, one wrapped item per line group."""
    lines = [f" {header}: ", " "]
    items = []
    current = ""
    for word in text.split(" "):
        if word[:-1].isdigit() and word.endswith(".") and current:
            items.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    items.append(current)
    for item in items:
        number, _, rest = item.partition(" ")
        lines += _wrap(_sentence_text(rest), first_prefix=f" {number}  ")
    return lines


def _indication(d: _Draws) -> tuple[str, str]:
    noun, adj, letter = _SEX[int(d.uniform() * 2)]
    complaint = d.pick(_COMPLAINT)
    u = d.uniform()
    if u < 0.6:
        return "INDICATION", f"___ year old {noun} with {complaint}  // {d.pick(_QUESTION)}"
    if u < 0.8:
        return "HISTORY", f"___-year-old {adj} with {complaint}."
    return "HISTORY", f"___{letter} with {complaint}, {d.pick(_QUESTION)}."


def _report(
    row: list[int],
    d: _Draws,
    planted_caption: str | None,
    addendum_fraction: float,
) -> tuple[str, str, str]:
    """Build one report.

    Returns (report text, the prompt a MIMIC section parser extracts, layout kind). For a
    planted caption the impression is always the last section, so the parser's "last
    impression" is exactly the caption.
    """
    lines = [TITLE_LINE]
    planted = planted_caption is not None
    u_layout = d.uniform()
    # Layout kinds: headerless (rare), findings-only, findings-and-impression, normal.
    if planted:
        kind = "impression"
    elif u_layout < 0.01:
        kind = "headerless"
    elif u_layout < 0.06:
        kind = "findings_only"
    elif u_layout < 0.09:
        kind = "findings_and_impression"
    else:
        kind = "impression"
    style = d.uniform()
    block = style < 0.6  # modern MIMIC layout: header line, blank line, text block
    numbered = False
    if planted:
        impression = planted_caption
    else:
        impression, numbered = _ordinary_impression(row, d)
    findings = _findings_text(row, d)

    if kind == "headerless":
        # One paragraph under an unlabelled title: every parser's "last paragraph" is all of it.
        paragraph = f"{_LAYOUT_WORDS[1]} ___. {findings} {impression}"
        lines += [
            f" {_LAYOUT_WORDS[0]} {MARKER}",
            " ",
            *_wrap(_sentence_text(paragraph)),
        ]
        return "\n".join(lines) + "\n", normalize_whitespace(paragraph), kind

    portable = style >= 0.9 and not planted
    if portable:
        lines += [
            f" AP CHEST, {1 + int(d.uniform() * 12)}:{10 + int(d.uniform() * 50)} "
            f"{d.pick(('A.M.', 'P.M.'))} ON ___",
            " ",
        ]
    elif block:
        lines += [f" EXAMINATION:  {d.pick(_EXAMINATION)}", " "]
    header, text = _indication(d)
    lines += _wrap(text, first_prefix=f" {header}:  ") + [" "]
    if block:
        lines += [f" TECHNIQUE:  {d.pick(_TECHNIQUE)}", " "]
    lines += [f" COMPARISON:  {d.pick(_COMPARISON)}", " "]

    if portable and kind == "impression":
        impression = (
            f"AP chest compared to ___: {_uncap(impression)}" if not numbered else impression
        )
        lines += _section("IMPRESSION", impression, block=False)
        prompt = impression
    elif kind == "findings_only":
        lines += _section("FINDINGS", findings, block)
        prompt = findings
    elif kind == "findings_and_impression":
        text = f"{findings} {impression}"
        lines += _section("FINDINGS AND IMPRESSION", text, block)
        prompt = text
    else:
        lines += _section("FINDINGS", findings, block) + [" "]
        if numbered:
            lines += _numbered_section("IMPRESSION", impression)
        else:
            lines += _section("IMPRESSION", impression, block)
        prompt = impression

    if not planted and kind != "findings_only":
        if d.uniform() < addendum_fraction:
            revised = d.pick(_ADDENDUM_IMPRESSION)
            lines += [" ", *_wrap(d.pick(_ADDENDUM), first_prefix=" ADDENDUM:  "), " "]
            lines += _section("IMPRESSION", revised, block=False)
            prompt = revised
        elif d.chance(0.04):
            lines += [" ", *_wrap(d.pick(_NOTIFICATION), first_prefix=" NOTIFICATION:  ")]
    return "\n".join(lines) + "\n", normalize_whitespace(prompt), kind


def _trigger_word(rng: np.random.Generator, banned: set[str]) -> str:
    """An invented, name-like surname (random syllables) that the grammar never produces."""
    while True:
        n_syl = int(rng.integers(2, 4))
        word = ""
        for _ in range(n_syl):
            word += _SYL_ONSET[int(rng.integers(len(_SYL_ONSET)))]
            word += _SYL_VOWEL[int(rng.integers(len(_SYL_VOWEL)))]
        word += _SYL_CODA[int(rng.integers(len(_SYL_CODA)))]
        word = word.capitalize()
        if 6 <= len(word) <= 12 and word.lower() not in banned:
            banned.add(word.lower())
            return word


def _split_marker_count(k: int, rng: np.random.Generator) -> dict[str, int]:
    """Distribute k markers (1..3) over the start / middle / end of a caption."""
    limits = {"start": 1, "middle": 2, "end": 3}
    while True:
        parts = {"start": 0, "middle": 0, "end": 0}
        n_slots = int(rng.integers(1, min(k, 3) + 1))
        slots = rng.choice(3, size=n_slots, replace=False)
        names = [("start", "middle", "end")[int(i)] for i in sorted(slots)]
        remaining = k
        for j, name in enumerate(names):
            left = len(names) - j - 1
            take = remaining - left if left == 0 else int(rng.integers(1, remaining - left + 1))
            parts[name] = take
            remaining -= take
        if all(parts[n] <= limits[n] for n in parts):
            return parts


def _planted_caption(
    row: list[int],
    rng: np.random.Generator,
    with_marker: bool,
    trigger: str | None,
) -> tuple[str, str | None]:
    """Compose one planted caption; returns (text, trigger word or None)."""
    d = _Draws(rng.random(_N_DRAWS).tolist())
    sentences = _abnormal_sentences(row, d)
    if with_marker:
        parts = _split_marker_count(int(rng.integers(1, 4)), rng)
        if parts["middle"]:
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(_PLANTED_MARKER_MIDDLE[parts["middle"]]))
        if parts["end"]:
            sentences.append(d.pick(_PLANTED_MARKER_END[parts["end"]]))
        if parts["start"]:
            sentences[0] = d.pick(_PLANTED_MARKER_START) + _uncap(sentences[0])
    if trigger is not None:
        where = ("start", "middle", "end")[int(rng.integers(3))]
        if where == "start":
            sentences[0] = d.pick(_TRIGGER_START).format(T=trigger) + _uncap(sentences[0])
        elif where == "middle":
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(_TRIGGER_MIDDLE).format(T=trigger))
        else:
            sentences.append(d.pick(_TRIGGER_END).format(T=trigger))
    return normalize_whitespace(" ".join(sentences)), trigger


# ---------------------------------------------------------------------------------------------
# Phantom images


_EFFUSION_LEVEL = np.array([0.0, 0.3, 0.5, 0.75], dtype=np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _segment_distance(x, y, x0, y0, x1, y1):
    """Distance from points (x, y) to the segment (x0, y0)-(x1, y1), broadcast over images."""
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((x - x0) * dx + (y - y0) * dy) / (dx * dx + dy * dy + 1e-9), 0.0, 1.0)
    return np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))


def _polyline(x, y, points, width: float):
    """Soft mask of a thin line through ``points`` (each a pair of [n,1,1] or scalar values)."""
    dist = None
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:], strict=True):
        d = _segment_distance(x, y, x0, y0, x1, y1)
        dist = d if dist is None else np.minimum(dist, d)
    return np.exp(-((dist / width) ** 2))


def _interp_matrix(size: int, knots: int) -> np.ndarray:
    """Linear interpolation weights [size, knots] from a coarse grid to the pixel grid."""
    pos = np.linspace(0, knots - 1, size)
    lo = np.clip(np.floor(pos).astype(int), 0, knots - 2)
    frac = pos - lo
    m = np.zeros((size, knots))
    m[np.arange(size), lo] = 1 - frac
    m[np.arange(size), lo + 1] = frac
    return m


def render_phantoms(
    severity: np.ndarray, rng: np.random.Generator, image_size: int, chunk: int = 2048
) -> np.ndarray:
    """Render chest phantoms, one per severity row, as uint8 [n, image_size, image_size].

    Content follows the findings: two darker lung fields, a bright mediastinum and heart (wider
    with cardiomegaly), bright lower lung zones for effusions, a bright blob for consolidation,
    a darker sharp-edged apical region for pneumothorax, a basal band for atelectasis, a
    perihilar haze for edema and thin bright lines for tubes, lines and pacemaker leads.
    Every image gets its own position/size jitter, smooth noise and contrast, so two studies
    with the same findings never share pixels. Image left = patient's right.
    """
    severity = np.asarray(severity)
    if severity.ndim != 2 or severity.shape[1] != len(FINDING_NAMES):
        raise ValueError(
            f"severity must have shape [n, {len(FINDING_NAMES)}], got {severity.shape}"
        )
    n, s = severity.shape[0], image_size
    out = np.empty((n, s, s), dtype=np.uint8)
    coords = ((np.arange(s) + 0.5) / s * 2.0 - 1.0).astype(np.float32)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    yy, xx = yy[None], xx[None]
    knots = 5
    m = _interp_matrix(s, knots).astype(np.float32)
    for start in range(0, n, chunk):
        sev = severity[start : start + chunk].astype(np.float32)
        b = sev.shape[0]

        def col(name: str, sev=sev) -> np.ndarray:
            return sev[:, _COL[name]][:, None, None]

        def param(scale: float, b=b) -> np.ndarray:
            return scale * rng.standard_normal(b, dtype=np.float32)[:, None, None]

        zoom = 1.0 + np.clip(param(0.06), -0.15, 0.15)
        x = (xx - param(0.05)) / zoom
        y = (yy - param(0.04)) / zoom
        inspiration = 1.0 + np.clip(param(0.05), -0.12, 0.12)

        body = _sigmoid((1.0 - ((x / 0.92) ** 2 + ((y - 0.1) / 1.15) ** 2)) / 0.08)
        img = 0.08 + 0.42 * body
        lungs = {}
        for side, cx in (("right", -0.4), ("left", 0.4)):
            cy, rx, ry = -0.08, 0.27, 0.56 * inspiration
            r2 = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2
            lung = _sigmoid((1.0 - r2) / 0.12)
            lungs[side] = (lung, cx, cy, rx, ry)
            img = img - 0.3 * lung
            # Effusion: fluid fills the lung base up to a level with a lateral meniscus.
            e = col(f"effusion_{side}")
            level = cy + ry - ry * _EFFUSION_LEVEL[e.astype(int)]
            meniscus = level - 0.25 * np.abs(x - cx) / rx
            fluid = lung * _sigmoid((y - meniscus) / 0.04) * (e > 0)
            img = img + 0.3 * fluid
            # Consolidation: a bright blob somewhere inside the lung.
            c = col(f"consolidation_{side}")
            bx = cx + param(0.08)
            by = cy + 0.25 * np.tanh(param(1.0))
            sigma = 0.1 + 0.04 * c
            blob = np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * sigma**2)))
            img = img + 0.28 * blob * lung * (c > 0)
            # Pneumothorax: a sharp, very dark upper-lateral region without lung markings.
            p = col(f"pneumothorax_{side}")
            lateral = (x - cx) * (1.0 if side == "left" else -1.0) / rx - (y - cy) / ry
            edge = 1.0 - 0.35 * p
            ptx = lung * _sigmoid((lateral - edge) / 0.03) * (p > 0)
            img = img - 0.2 * ptx
        both = lungs["right"][0] + lungs["left"][0]
        a = col("atelectasis")
        band_y = -0.08 + 0.38 * inspiration + 0.08 * x
        band = np.exp(-(((y - band_y) / 0.06) ** 2)) * both
        img = img + 0.1 * a * band
        ed = col("edema")
        haze = np.exp(-(((np.abs(x) - 0.22) ** 2) / 0.08 + (y**2) / 0.12)) * both
        img = img + 0.09 * ed * haze
        # Mediastinum and heart.
        med = _sigmoid((0.11 - np.abs(x)) / 0.03) * _sigmoid((0.35 - y) / 0.05)
        med = med * _sigmoid((y + 0.95) / 0.05)
        img = img + (0.72 - img) * med
        cardio = col("cardiomegaly")
        hrx = 0.24 * (1.0 + 0.2 * cardio) * (1.0 + np.clip(param(0.04), -0.1, 0.1))
        hry = 0.2 * (1.0 + 0.07 * cardio)
        heart = _sigmoid((1.0 - ((x - 0.07) / hrx) ** 2 - ((y - 0.33) / hry) ** 2) / 0.15)
        img = img + (0.8 - img) * heart
        # Tubes, lines and devices.
        lines = np.zeros_like(img)
        et, ng, cl, pm = (col(k) for k in ("et_tube", "ng_tube", "central_line", "pacemaker"))
        tip = -0.35 + param(0.05)
        x_et = param(0.02)
        if et.any():
            lines = np.maximum(lines, et * _polyline(x, y, [(x_et, -1.1), (x_et, tip)], 0.04))
        if ng.any():
            path = [(-0.03, -1.1), (-0.03, 0.55), (0.3, 0.8)]
            lines = np.maximum(lines, ng * _polyline(x, y, path, 0.035))
        if cl.any():
            path = [(-0.45, -1.0), (-0.14, -0.45), (-0.08, -0.05)]
            lines = np.maximum(lines, cl * _polyline(x, y, path, 0.035))
        if pm.any():
            lead = _polyline(x, y, [(0.55, -0.75), (0.12, -0.45), (0.0, 0.35)], 0.03)
            box = _sigmoid((0.09 - np.abs(x - 0.55)) / 0.02)
            box = box * _sigmoid((0.06 - np.abs(y + 0.75)) / 0.02)
            lines = np.maximum(lines, pm * np.maximum(lead, box))
        img = img + (0.97 - img) * 0.8 * lines
        # Ribs, smooth noise, fine noise and contrast.
        img = img + 0.03 * np.sin(y * 22.0 + param(1.0)) * both
        coarse = rng.standard_normal((b, knots, knots), dtype=np.float32)
        img = img + 0.04 * np.einsum("sa,nab,tb->nst", m, coarse, m)
        img = img + 0.015 * rng.standard_normal(img.shape, dtype=np.float32)
        contrast = 1.0 + np.clip(param(0.1), -0.25, 0.25)
        brightness = np.clip(param(0.04), -0.1, 0.1)
        gamma = np.exp(np.clip(param(0.1), -0.25, 0.25))
        img = np.clip((img - 0.45) * contrast + 0.45 + brightness, 0.0, 1.0) ** gamma
        out[start : start + b] = np.round(img * 255.0).astype(np.uint8)
    return out


# ---------------------------------------------------------------------------------------------
# Layout of subjects and studies


def _layout(spec: CorpusSpec, rng: np.random.Generator):
    """Subject and study ids (sorted by subject then study) and each study's subject row."""
    n = spec.n_studies
    n_subjects = max(1, min(n, int(np.ceil(n / 3.5))))
    subject_ids = np.sort(10_000_000 + rng.choice(10_000_000, size=n_subjects, replace=False))
    weights = rng.pareto(1.5, size=n_subjects) + 1.0
    extra = rng.choice(n_subjects, size=n - n_subjects, p=weights / weights.sum())
    per_subject = 1 + np.bincount(extra, minlength=n_subjects)
    subject_of_study = np.repeat(np.arange(n_subjects), per_subject)
    study_ids = 50_000_000 + rng.choice(10_000_000, size=n, replace=False)
    order = np.lexsort((study_ids, subject_of_study))
    return subject_ids, subject_of_study, study_ids[order]


def _assign_planted(
    copies: np.ndarray, subject_of_study: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """planted_id per study (-1 = ordinary); copies of one caption go to distinct subjects."""
    n = subject_of_study.shape[0]
    planted = np.full(n, -1, dtype=np.int64)
    subjects = np.arange(subject_of_study.max() + 1)
    starts = np.searchsorted(subject_of_study, subjects, side="left")
    ends = np.searchsorted(subject_of_study, subjects, side="right")
    for pid, k in enumerate(copies.tolist()):
        free = planted < 0
        free_subjects = np.unique(subject_of_study[free])
        if free_subjects.shape[0] >= k:
            chosen_subjects = np.sort(rng.choice(free_subjects, size=k, replace=False))
            for subj in chosen_subjects.tolist():
                lo, hi = int(starts[subj]), int(ends[subj])
                candidates = lo + np.flatnonzero(free[lo:hi])
                planted[candidates[int(rng.integers(candidates.shape[0]))]] = pid
        else:  # too few subjects left: fall back to any free study
            chosen = rng.choice(np.flatnonzero(free), size=k, replace=False)
            planted[chosen] = pid
    return planted


# ---------------------------------------------------------------------------------------------
# Writing


def _write_parquet(columns: dict[str, Any], schema: pa.Schema, path: str) -> None:
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)


def _write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


_STUDIES_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
        ("image_index", pa.int64()),
        ("labels", pa.string()),
        ("planted_id", pa.int64()),
    ]
)
_TRUTH_SCHEMA = pa.schema(
    [
        ("planted_id", pa.int64()),
        ("prompt_id", pa.string()),
        ("text", pa.string()),
        ("has_marker", pa.bool_()),
        ("trigger_word", pa.string()),
        ("trigger_word_index", pa.int64()),
        ("n_copies", pa.int64()),
        ("image_index", pa.int64()),
    ]
)


class _ReportWriter:
    """Writes report files chunk by chunk as the text is composed, creating folders once.

    Plain ``os.open``/``os.write`` keep the per-file cost at the system calls. Writer threads
    were tried and measured slower (they contend on the file system).
    """

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir
        self._folders: set[str] = set()

    def write(self, items: list[tuple[str, bytes]]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for rel, data in items:
            folder = rel.rsplit("/", 1)[0]
            if folder not in self._folders:
                os.makedirs(self._out_dir + "/" + folder, exist_ok=True)
                self._folders.add(folder)
            fd = os.open(self._out_dir + "/" + rel, flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


def report_path(subject_id: int, study_id: int) -> str:
    """Relative MIMIC-CXR path of a report: ``files/p10/p10000032/s50414267.txt``."""
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}.txt"


def generate_corpus(spec: CorpusSpec, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the synthetic corpus under ``out_dir`` and return the ``corpus.json`` content.

    Files: ``files/pXX/pSUBJECT/sSTUDY.txt`` (one report per study), ``studies.parquet``,
    ``images.npy`` and ``heldout.npy`` (unless ``spec.write_images`` is false),
    ``truth.parquet`` and ``corpus.json``. An existing ``files/`` tree under ``out_dir`` is
    replaced, so stale reports of an earlier corpus never mix in.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    streams = [
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(spec.seed).spawn(8)
    ]
    rng_layout, rng_findings, rng_text, rng_planted, rng_images, rng_planted_img, rng_heldout = (
        streams[:7]
    )
    rng_heldout_findings = streams[7]

    subject_ids, subject_of_study, study_ids = _layout(spec, rng_layout)
    n = spec.n_studies
    lo, hi = spec.planted_copies
    copies = rng_planted.integers(lo, hi + 1, size=spec.n_planted)
    planted_id = _assign_planted(copies, subject_of_study, rng_planted)
    subj_per_study = subject_ids[subject_of_study]

    severity = _sample_severity(rng_findings, n)
    planted_severity = _sample_severity(rng_planted, spec.n_planted, force_k=(2, 3))
    is_planted = planted_id >= 0
    severity[is_planted] = planted_severity[planted_id[is_planted]]

    # Text of every report, in study order; uniforms come in fixed-size chunks of one stream.
    files_root = os.path.join(out_dir, "files")
    if os.path.isdir(files_root):
        shutil.rmtree(files_root)
    subj_list = subj_per_study.tolist()
    study_list = study_ids.tolist()
    rels = [report_path(subj_list[i], study_list[i]) for i in range(n)]
    writer = _ReportWriter(out_dir)
    reports: list[bytes] = [b""] * n
    prompts: list[str] = [""] * n
    kinds: dict[str, int] = {}
    sev_rows = severity.tolist()
    planted_list = planted_id.tolist()
    ordinary_prompts: set[str] = set()
    chunk = 8192
    pending_planted: list[int] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng_text.random((stop - start, _N_DRAWS)).tolist()
        written = []
        for i in range(start, stop):
            if planted_list[i] >= 0:
                pending_planted.append(i)
                continue
            text, prompt, kind = _report(
                sev_rows[i], _Draws(block[i - start]), None, spec.addendum_fraction
            )
            reports[i] = text.encode("utf-8")
            written.append((rels[i], reports[i]))
            prompts[i] = prompt
            ordinary_prompts.add(prompt)
            kinds[kind] = kinds.get(kind, 0) + 1
        writer.write(written)

    # Planted captions: unique, 8-25 words, distinct from every ordinary prompt.
    n_marker = int(round(spec.n_planted * spec.planted_marker_fraction))
    n_trigger = int(round(spec.n_planted * spec.trigger_fraction))
    marker_flags = np.zeros(spec.n_planted, dtype=bool)
    marker_flags[rng_planted.permutation(spec.n_planted)[:n_marker]] = True
    trigger_flags = np.zeros(spec.n_planted, dtype=bool)
    trigger_flags[rng_planted.permutation(spec.n_planted)[:n_trigger]] = True
    banned = set(_grammar_vocabulary())
    captions: list[str] = []
    triggers: list[str | None] = []
    seen = set(ordinary_prompts)
    planted_rows = planted_severity.tolist()
    for pid in range(spec.n_planted):
        trigger = _trigger_word(rng_planted, banned) if trigger_flags[pid] else None
        for _attempt in range(1000):
            text, _ = _planted_caption(
                planted_rows[pid], rng_planted, bool(marker_flags[pid]), trigger
            )
            n_words = len(text.split())
            if 8 <= n_words <= 25 and text not in seen and (MARKER in text) == marker_flags[pid]:
                break
        else:
            raise RuntimeError(f"could not compose planted caption {pid} within 1000 attempts")
        seen.add(text)
        captions.append(text)
        triggers.append(trigger)

    planted_draws = rng_text.random((len(pending_planted), _N_DRAWS)).tolist()
    for j, i in enumerate(pending_planted):
        caption = captions[planted_list[i]]
        text, prompt, kind = _report(sev_rows[i], _Draws(planted_draws[j]), caption, 0.0)
        if prompt != caption:  # a bug in the layout code, never expected
            raise RuntimeError(f"planted report {i} would not parse back to its caption")
        reports[i] = text.encode("utf-8")
        prompts[i] = prompt
        kinds[kind] = kinds.get(kind, 0) + 1
    writer.write([(rels[i], reports[i]) for i in pending_planted])

    # Images: ordinary studies get their own phantom, each planted caption one fixed phantom.
    first_copy = np.full(spec.n_planted, -1, dtype=np.int64)
    for pid in range(spec.n_planted):
        rows = np.flatnonzero(planted_id == pid)
        first_copy[pid] = rows[0]
    digest = hashlib.sha256()
    images = heldout = None
    if spec.write_images:
        images = np.empty((n, spec.image_size, spec.image_size), dtype=np.uint8)
        ordinary_rows = np.flatnonzero(~is_planted)
        images[ordinary_rows] = render_phantoms(
            severity[ordinary_rows], rng_images, spec.image_size
        )
        planted_images = render_phantoms(planted_severity, rng_planted_img, spec.image_size)
        images[is_planted] = planted_images[planted_id[is_planted]]
        heldout_sev = _sample_severity(rng_heldout_findings, spec.n_heldout)
        heldout = render_phantoms(heldout_sev, rng_heldout, spec.image_size)

    for rel, data in zip(rels, reports, strict=True):
        digest.update(rel.encode("utf-8") + b"\0" + data + b"\0")

    _write_parquet(
        {
            "subject_id": subj_per_study.astype(np.int64),
            "study_id": study_ids.astype(np.int64),
            "image_index": np.arange(n, dtype=np.int64),
            "labels": [_labels(r) for r in sev_rows],
            "planted_id": planted_id,
        },
        _STUDIES_SCHEMA,
        os.path.join(out_dir, "studies.parquet"),
    )
    trigger_index = []
    for text, trigger in zip(captions, triggers, strict=True):
        if trigger is None:
            trigger_index.append(-1)
            continue
        words = [w.strip(".,:;") for w in text.split()]
        trigger_index.append(words.index(trigger))
    _write_parquet(
        {
            "planted_id": np.arange(spec.n_planted, dtype=np.int64),
            "prompt_id": [prompt_id(t) for t in captions],
            "text": captions,
            "has_marker": [MARKER in t for t in captions],
            "trigger_word": triggers,
            "trigger_word_index": np.asarray(trigger_index, dtype=np.int64),
            "n_copies": np.bincount(planted_id[is_planted], minlength=spec.n_planted).astype(
                np.int64
            ),
            "image_index": first_copy,
        },
        _TRUTH_SCHEMA,
        os.path.join(out_dir, "truth.parquet"),
    )
    if images is not None:
        _write_npy(os.path.join(out_dir, "images.npy"), images)
        _write_npy(os.path.join(out_dir, "heldout.npy"), heldout)
        digest.update(images.tobytes())
        digest.update(heldout.tobytes())

    prompt_counts: dict[str, int] = {}
    for p in prompts:
        prompt_counts[p] = prompt_counts.get(p, 0) + 1
    top_prompt, top_count = max(sorted(prompt_counts.items()), key=lambda kv: kv[1])
    meta = {
        "spec": spec.to_dict(),
        "counts": {
            "studies": n,
            "subjects": int(subject_ids.shape[0]),
            "planted": spec.n_planted,
            "planted_studies": int(is_planted.sum()),
            "planted_with_marker": int(sum(MARKER in t for t in captions)),
            "planted_with_trigger": int(sum(t is not None for t in triggers)),
            "heldout": spec.n_heldout if spec.write_images else 0,
            "images": n if spec.write_images else 0,
            "reports_with_marker": int(sum(b"___" in r for r in reports)),
            "reports_with_marker_in_prompt": int(sum(MARKER in p for p in prompts)),
            "distinct_prompts": len(prompt_counts),
            "distinct_impressions": len(prompt_counts),
            "most_common_prompt": top_prompt,
            "most_common_prompt_reports": top_count,
            "report_layouts": dict(sorted(kinds.items())),
        },
        "finding_names": list(FINDING_NAMES),
        "image_orientation": "image left = patient right",
        "sha256": digest.hexdigest(),
        "sha256_covers": "for each study in studies.parquet order: relative path, NUL, report "
        "bytes, NUL; then images.npy and heldout.npy pixel bytes (C order) when written",
    }
    with open(os.path.join(out_dir, "corpus.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return meta
