"""The codes a hospital system files a result under: a model's label as a SNOMED CT concept where one exists, else
the label itself in medassist's own coding scheme, stated as such (DICOM's private ``99MEDASSIST`` scheme; for FHIR
the system ``urn:medassist:label``).

Most concepts come from DICOM's own code tables as pydicom ships them (``pydicom.sr.codedict``, the context groups
of DICOM PS3.16), looked up by name so that a code is never typed by hand where DICOM lists it; the few findings
DICOM's context groups do not list (pneumonia, atelectasis, consolidation, the blood cells) carry their SNOMED CT
concept ids here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

SNOMED_SYSTEM = "http://snomed.info/sct"
LABEL_SCHEME = "99MEDASSIST"
LABEL_SYSTEM = "urn:medassist:label"

# A label (lower case, words joined by "_") -> the name of its concept in pydicom's SNOMED CT code dictionary.
_DICOM_TABLE = {
    "vessel": "BloodVessel",
    "vessels": "BloodVessel",
    "blood_vessel": "BloodVessel",
    "retinal_vessel": "BloodVessel",
    "effusion": "PleuralEffusion",
    "pleural_effusion": "PleuralEffusion",
    "cardiomegaly": "Cardiomegaly",
    "edema": "Edema",
    "pneumothorax": "Pneumothorax",
    "nodule": "Nodule",
    "mass": "Mass",
    "polyp": "PolypOfColon",
    "lesion": "CircumscribedLesion",
    "skin_lesion": "SkinLesion",
    "cell": "Cell",
}
# Concepts that DICOM's context groups do not list: SNOMED CT concept id and preferred term.
_SNOMED = {
    "pneumonia": ("233604007", "Pneumonia"),
    "atelectasis": ("46621007", "Atelectasis"),
    "consolidation": ("95436008", "Lung consolidation"),
    "rbc": ("41898006", "Erythrocyte"),
    "red_blood_cell": ("41898006", "Erythrocyte"),
    "wbc": ("52501007", "Leukocyte"),
    "white_blood_cell": ("52501007", "Leukocyte"),
    "platelet": ("16378004", "Platelet"),
    "platelets": ("16378004", "Platelet"),
}


@dataclass(frozen=True)
class Term:
    """A coded concept.

    Attributes:
        code: the code value (a SNOMED CT concept id, or the model's label).
        scheme: DICOM's coding scheme designator: ``SCT`` or ``99MEDASSIST``.
        meaning: the human-readable meaning.
    """

    code: str
    scheme: str
    meaning: str

    @property
    def system(self) -> str:
        """The FHIR ``system`` URI of the scheme."""
        return SNOMED_SYSTEM if self.scheme == "SCT" else LABEL_SYSTEM

    @property
    def standard(self) -> bool:
        """Whether the code comes from a standard terminology (not the model's own label)."""
        return self.scheme != LABEL_SCHEME

    def dicom(self) -> object:
        """The concept as highdicom's ``CodedConcept``."""
        from highdicom.sr import CodedConcept

        return CodedConcept(value=self.code, scheme_designator=self.scheme, meaning=self.meaning[:64])

    def fhir(self) -> dict[str, str]:
        """The concept as a FHIR ``Coding``."""
        return {"system": self.system, "code": self.code, "display": self.meaning}


def _key(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")


@lru_cache(maxsize=4096)
def term(label: str) -> Term:
    """The concept of a model's label: SNOMED CT where one is known, else the label in ``99MEDASSIST``."""
    key = _key(label)
    if key in _DICOM_TABLE:
        from pydicom.sr.codedict import codes

        c = getattr(codes.SCT, _DICOM_TABLE[key])
        return Term(str(c.value), "SCT", str(c.meaning))
    if key in _SNOMED:
        code, meaning = _SNOMED[key]
        return Term(code, "SCT", meaning)
    # DICOM code values are at most 16 characters (SH); the meaning keeps the whole label.
    return Term(key[:16] or "label", LABEL_SCHEME, label)
