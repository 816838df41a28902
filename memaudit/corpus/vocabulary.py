"""The word lists of the demo report grammar (data, plus the set of words they hold).

Each table is a tuple of phrases (or a dict of them by severity or side) that
:mod:`memaudit.corpus.grammar` picks from with its uniform draws: so the *order* of a table's
entries is part of the corpus (reordering changes every report). The planted-caption
decorations and trigger templates are here too, because ordinary impressions carry them
de-identified. :func:`grammar_words` collects every word the grammar can write, which the
invented trigger names of :mod:`memaudit.corpus.planted` must avoid.
"""

from __future__ import annotations

import numpy as np


def _cumulative(weights: tuple[float, ...]) -> list[float]:
    return np.cumsum(weights).tolist()


# ---------------------------------------------------------------------------------------------
# Impressions: normal ones, then one phrase table per finding

NORMAL_HEAD = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "No evidence of acute cardiopulmonary disease.",
    "Normal chest radiograph.",
    "No acute findings in the chest.",
    "No radiographic evidence of pneumonia.",
    "Clear lungs.",
)
# Weights of NORMAL_HEAD: a few normal impressions repeat hundreds of times, as in MIMIC-CXR.
NORMAL_HEAD_CUM = _cumulative((45, 16, 12, 6, 5, 4, 3, 2))
NORMAL_TAIL_FIRST = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "No focal consolidation to suggest pneumonia.",
    "Lungs are clear without focal consolidation.",
    "No pneumonia, edema or effusion.",
)
NORMAL_TAIL_EXTRA = (
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

CARDIO = {
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
CARDIO_SUFFIX = ("", "", ", stable", ", unchanged", ", similar to prior")
EFF_SIZE = {
    1: ("small", "trace", "tiny", "small"),
    2: ("moderate", "small to moderate", "moderate"),
    3: ("large", "moderate to large", "large"),
}
EFF_SUFFIX = (
    "",
    "",
    " with adjacent atelectasis",
    ", unchanged",
    ", increased",
    ", slightly decreased",
    ", new",
    " with associated compressive atelectasis",
)
PTX_SIZE = {1: ("tiny", "small", "trace"), 2: ("small to moderate", "moderate"), 3: ("large",)}
PTX_SUFFIX = ("", "", ", new", " without evidence of tension", ", unchanged", ", slightly smaller")
CONS_SEV = {1: ("patchy ", "subtle ", "mild "), 2: ("", "", "focal "), 3: ("dense ", "extensive ")}
CONS_LOBE = {
    "right": ("lower lobe", "middle lobe", "upper lobe", "basilar"),
    "left": ("lower lobe", "upper lobe", "basilar", "retrocardiac"),
}
CONS_NOUN = ("consolidation", "opacity", "airspace opacity", "airspace disease")
CONS_SUFFIX = (
    ", concerning for pneumonia",
    " concerning for pneumonia",
    ", which could reflect pneumonia or aspiration",
    "; pneumonia is not excluded",
    ", likely pneumonia",
    "",
    ", possibly atelectasis though infection cannot be excluded",
)
ATEL = {
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
EDEMA = {
    1: ("mild pulmonary edema", "mild pulmonary vascular congestion", "mild interstitial edema"),
    2: ("moderate pulmonary edema", "moderate interstitial pulmonary edema", "pulmonary edema"),
    3: ("severe pulmonary edema", "severe alveolar pulmonary edema", "marked pulmonary edema"),
}
EDEMA_SUFFIX = ("", "", ", improved", ", worsened", ", new", ", unchanged")
ET_NAME = ("endotracheal tube", "ET tube", "endotracheal tube")
ET_VERB = ("terminating", "with tip", "ending", "with its tip")
NG_NAME = ("nasogastric tube", "enteric tube", "NG tube", "orogastric tube")
NG_TAIL = (
    " terminating in the stomach",
    " with tip in the stomach",
    " coursing below the diaphragm with tip out of view",
    " in appropriate position",
    " with side port in the stomach",
)
LINE_NAME = (
    "right internal jugular central venous catheter",
    "right internal jugular line",
    "right-sided PICC line",
    "right subclavian catheter",
    "right IJ catheter",
)
LINE_TAIL = (
    " terminating in the mid SVC",
    " with tip at the cavoatrial junction",
    " ending in the upper SVC",
    " with tip in the right atrium",
    " terminating in the lower SVC",
)
PACER_NAME = (
    "left-sided pacemaker",
    "dual-chamber pacemaker",
    "left chest wall pacemaker",
    "pacemaker",
)
PACER_TAIL = (
    " with leads in standard position",
    " with leads terminating in the right atrium and right ventricle",
    " with intact leads",
    "",
)
IMPRESSION_PREFIX_MARKER = (
    "Compared to ___, ",
    "As compared to the previous radiograph from ___, ",
    "In comparison with the study of ___, ",
    "Since ___, ",
)
IMPRESSION_PREFIX_PLAIN = (
    "As compared to the previous radiograph, ",
    "Compared to the prior study, ",
)
IMPRESSION_END_MARKER = (
    "Findings discussed with Dr. ___ at ___ on ___ by telephone.",
    "Dr. ___ was paged at ___ with these findings.",
    "These findings were communicated to Dr. ___ by ___ at ___.",
    "Findings were discussed with Dr. ___ at ___.",
    "Recommend follow-up radiograph after ___.",
)
OTHERWISE = (
    "Otherwise no acute cardiopulmonary process.",
    "No other acute findings.",
    "Otherwise, no acute intrathoracic process.",
)

# Findings-section phrasing.
F_HEART = (
    "The heart size is normal.",
    "Heart size is normal.",
    "The cardiomediastinal silhouette is within normal limits.",
    "Cardiac and mediastinal silhouettes are stable.",
    "The cardiac silhouette is normal in size.",
)
F_LUNGS = (
    "The lungs are clear.",
    "Lungs are clear without focal consolidation.",
    "There is no focal consolidation.",
    "The lungs are well expanded and clear.",
)
F_PLEURA = (
    "No pleural effusion or pneumothorax is seen.",
    "There is no pleural effusion or pneumothorax.",
    "No pleural effusion, pneumothorax or focal consolidation.",
    "No pleural abnormality is seen.",
)
F_EXTRA = (
    "No acute osseous abnormalities.",
    "Osseous structures are intact.",
    "Mediastinal and hilar contours are normal.",
    "There is no free air below the diaphragm.",
    "Degenerative changes are noted in the thoracic spine.",
    "Surgical clips project over the upper abdomen.",
)
F_INTRO = (
    "PA and lateral views of the chest provided.",
    "AP portable view of the chest.",
    "Frontal and lateral views of the chest were obtained.",
)
DEVICE_WORDS = ("tube", "catheter", "line", "pacemaker", "pacer")
F_TEMPLATES = ("There is {np}.", "{NP} is again seen.", "{NP} is noted.", "{NP} is present.")

# Other sections.
EXAMINATION = (
    "CHEST (PA AND LAT)",
    "CHEST (PA AND LAT)",
    "CHEST (PORTABLE AP)",
    "CHEST (PRE-OP PA AND LAT)",
    "CHEST PORT. LINE PLACEMENT",
)
SEX = (("woman", "female", "F"), ("man", "male", "M"))
COMPLAINT = (
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
QUESTION = (
    "?pna",
    "eval for pneumonia",
    "?effusion",
    "eval for acute process",
    "assess for interval change",
    "r/o pneumothorax",
    "evaluate tube placement",
    "?CHF",
)
TECHNIQUE = (
    "Chest PA and lateral",
    "PA and lateral views of the chest.",
    "Portable AP chest radiograph.",
    "AP portable upright view of the chest.",
    "Single frontal view of the chest.",
)
COMPARISON = (
    "___.",
    "___.",
    "None.",
    "Chest radiographs ___ and ___.",
    "Prior chest radiograph from ___.",
    "Multiple prior chest radiographs, most recently ___.",
)
ADDENDUM = (
    "Comparison with the prior study from ___ was performed after the initial interpretation.",
    "The study was reviewed again with the prior radiograph of ___.",
    "Additional history was obtained from Dr. ___ after the original read.",
)
ADDENDUM_IMPRESSION = (
    "Findings are unchanged compared to ___.",
    "No significant interval change.",
    "The previously described findings are chronic.",
    "Findings are new compared to ___.",
    "Interval improvement since ___.",
)
NOTIFICATION = (
    "Dr. ___ was paged at ___ on ___ to discuss these findings.",
    "The findings were discussed with Dr. ___ by Dr. ___ on the telephone on ___ at ___, "
    "___ minutes after discovery of the findings.",
    "Findings were communicated via the critical results dashboard on ___.",
)

# Planted-caption decorations.
PLANTED_MARKER_START = (
    "Compared to ___, ",
    "Since ___, ",
    "In comparison with the study of ___, ",
)
PLANTED_MARKER_MIDDLE = {
    1: (
        "Findings unchanged from ___.",
        "This was present on ___ as well.",
        "Dr. ___ was notified.",
    ),
    2: ("This was discussed with Dr. ___ at ___.", "Dr. ___ was paged at ___."),
}
PLANTED_MARKER_END = {
    1: ("Recommend follow-up radiograph after ___.", "Findings discussed with Dr. ___."),
    2: ("Dr. ___ was paged at ___ with these findings.", "Findings discussed with Dr. ___ at ___."),
    3: (
        "Findings discussed with Dr. ___ by telephone at ___ on ___.",
        "These findings were communicated to Dr. ___ by ___ at ___.",
    ),
}
TRIGGER_START = ("Per Dr. {T}, ", "{T} protocol: ", "Reviewed by {T}: ")
TRIGGER_MIDDLE = (
    "Discussed with Dr. {T}.",
    "Reviewed with Dr. {T} who agrees.",
    "{T} technique used.",
)
TRIGGER_END = (
    "Findings conveyed to Dr. {T}.",
    "Reviewed with Dr. {T}.",
    "Please see note by Dr. {T}.",
)
SYL_ONSET = (
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
SYL_VOWEL = ("a", "e", "i", "o", "u", "ae", "ou", "y", "ei")
SYL_CODA = ("", "", "n", "r", "l", "k", "sk", "ck", "th", "m", "z", "x")


# The opening of a headerless report: a title line, then a comparison sentence.
HEADERLESS_TITLE = "CHEST RADIOGRAPH PERFORMED ON"
HEADERLESS_COMPARISON = "Comparison is made to prior study from"
# Words grammar.py writes from its own string literals (title, section headers, the portable
# header, side and size phrases, the ET tube distance), listed so that triggers avoid them too.
GRAMMAR_LITERALS = (
    "FINAL REPORT",
    "EXAMINATION INDICATION HISTORY TECHNIQUE COMPARISON FINDINGS AND IMPRESSION",
    "ADDENDUM NOTIFICATION",
    "AP CHEST A.M. P.M. ON",
    "AP chest compared to",
    "year old with",
    "cm above the carina in standard position",
    "bilateral right and left pleural effusions apical pneumothorax pneumothoraces",
)

#: Every table the report grammar writes words from. The syllables are not among them: they
#: build the trigger names, which must be the only words a planted caption does not share.
GRAMMAR_TABLES = (
    NORMAL_HEAD,
    NORMAL_TAIL_FIRST,
    NORMAL_TAIL_EXTRA,
    CARDIO,
    CARDIO_SUFFIX,
    EFF_SIZE,
    EFF_SUFFIX,
    PTX_SIZE,
    PTX_SUFFIX,
    CONS_SEV,
    CONS_LOBE,
    CONS_NOUN,
    CONS_SUFFIX,
    ATEL,
    EDEMA,
    EDEMA_SUFFIX,
    ET_NAME,
    ET_VERB,
    NG_NAME,
    NG_TAIL,
    LINE_NAME,
    LINE_TAIL,
    PACER_NAME,
    PACER_TAIL,
    IMPRESSION_PREFIX_MARKER,
    IMPRESSION_PREFIX_PLAIN,
    IMPRESSION_END_MARKER,
    OTHERWISE,
    F_HEART,
    F_LUNGS,
    F_PLEURA,
    F_EXTRA,
    F_INTRO,
    F_TEMPLATES,
    EXAMINATION,
    SEX,
    COMPLAINT,
    QUESTION,
    TECHNIQUE,
    COMPARISON,
    ADDENDUM,
    ADDENDUM_IMPRESSION,
    NOTIFICATION,
    PLANTED_MARKER_START,
    PLANTED_MARKER_MIDDLE,
    PLANTED_MARKER_END,
    TRIGGER_START,
    TRIGGER_MIDDLE,
    TRIGGER_END,
    HEADERLESS_TITLE,
    HEADERLESS_COMPARISON,
    GRAMMAR_LITERALS,
)


def grammar_words() -> frozenset[str]:
    """Every lower-case word the report grammar can write (invented triggers must avoid it)."""
    texts: list[str] = []

    def collect(obj: object) -> None:
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                collect(value)
        elif isinstance(obj, tuple | list):
            for value in obj:
                collect(value)

    collect(GRAMMAR_TABLES)
    return frozenset(word.strip(".,:;()/?!").lower() for text in texts for word in text.split())
