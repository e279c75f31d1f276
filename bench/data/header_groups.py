"""Groups from DICOM headers: a patient's images (PatientID) or a study's (StudyInstanceUID).

``--group-by patient`` (the default) keeps the DICOM files that share a PatientID in one
split, ``study`` those that share a StudyInstanceUID, ``none`` ignores the headers. The
groups (:func:`bench.data.user_groups.header_groups`) join the copy groups as ``--groups``
does (:mod:`bench.data.duplicates`), and a ``--groups`` file, when given, is used instead
of the headers.

The identifiers never leave the scan worker that reads them: each becomes a salted hash
(HMAC-SHA256 with the scan's random salt, :func:`pseudonym`) as the file is read, and
only that hash is kept. A run stores its salt in its folder (``header_salt.txt``), so
whoever holds the run folder and a patient's ID can tell which group is that patient's;
without both, a group id names no one. A DICOM file without the identifier is listed,
never guessed: it is its own group unless copies link it.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
from dataclasses import dataclass

from bench.config import GROUP_BY  # noqa: F401 (the choices, re-exported)

#: The header attribute each ``--group-by`` choice reads.
ATTRIBUTE = {"patient": "PatientID", "study": "StudyInstanceUID"}
#: Hex digits of a pseudonym: 64 bits, no collision among any realistic number of patients.
DIGITS = 16


@dataclass(frozen=True)
class HeaderKeys:
    """A DICOM file's group keys: salted hashes of its PatientID and StudyInstanceUID (None when absent)."""

    patient: str | None = None
    study: str | None = None

    def get(self, group_by: str) -> str | None:
        return getattr(self, group_by, None)


def new_salt() -> str:
    """A random salt (hex), one per scan."""
    return secrets.token_hex(16)


def pseudonym(value: str, salt: str) -> str:
    """The salted hash of an identifier (HMAC-SHA256, first :data:`DIGITS` hex digits)."""
    return hmac.new(bytes.fromhex(salt), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:DIGITS]


def header_keys(data: bytes, salt: str) -> HeaderKeys:
    """The :class:`HeaderKeys` of the DICOM file whose bytes are ``data`` (headers only)."""
    from bench.data.dicom import DicomUnreadable, read_dataset

    try:
        ds = read_dataset(io.BytesIO(data), pixels=False)
    except DicomUnreadable:
        return HeaderKeys()
    keys = {}
    for group_by, keyword in ATTRIBUTE.items():
        try:
            value = ds.get(keyword)
        except Exception:  # a damaged element: no key, listed as missing
            value = None
        text = str(value).strip() if value is not None else ""
        keys[group_by] = pseudonym(text, salt) if text else None
    return HeaderKeys(**keys)
