"""The demo report grammar's word lists (data only)."""

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
_COL = {name: i for i, name in enumerate(FINDING_NAMES)}

_EFFUSION_LEVEL = np.array([0.0, 0.3, 0.5, 0.75], dtype=np.float32)


def _cumulative(weights: tuple[float, ...]) -> list[float]:
    return np.cumsum(weights).tolist()


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
