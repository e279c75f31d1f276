"""DICOM test files, written here (pydicom), never downloaded: pictures from bench's phantom
with the bit depth, signedness, rescale, window, photometry, compression and patient
identifiers a test asks for, and the identifiers the privacy test plants and looks for."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Identifying values planted in every file :func:`write_dicom` writes (beside its PatientID):
#: none of them may appear in anything bench writes or prints.
PLANTED = {
    "PatientName": "Qzxwrtyk^Vblmnop",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACCN7731XQ",
    "OtherPatientIDs": "OTHERID5521Z",
    "InstitutionName": "Saint Qwerfield Infirmary",
    "ReferringPhysicianName": "Drplnk^Hjkqwe",
    "PatientAddress": "17 Zqvx Lane Pwkton",
    "StudyID": "STY88213K",
}


def patient_id(n: int) -> str:
    """A PatientID no other text in bench's outputs can hold by chance."""
    return f"PIDQ{n:04d}XK"


def phantom(seed: int, size: int = 64, lesion: bool = False) -> np.ndarray:
    """A phantom head slice, uint8."""
    from bench.data.phantom import render_slice

    return render_slice(np.random.default_rng(seed), size, lesion)


def write_dicom(path: Path, stored: np.ndarray, *, patient: str | None = "PIDQ0000XK", study: str | None = None,
                photometric: str = "MONOCHROME2", bits_stored: int | None = None, slope: float | None = None,
                intercept: float | None = None, window: tuple[float, float] | None = None,
                voi_lut: np.ndarray | None = None, voi_first: int = 0, voi_function: str | None = None,
                syntax: str = "explicit", preamble: bool = True, frames: int = 1, planted: bool = True) -> Path:
    """Write ``stored`` (the stored values, uint8/uint16/int16, ``(rows, cols)`` or RGB
    ``(rows, cols, 3)``) as a single- (or ``frames``-) frame DICOM file at ``path``.

    ``syntax``: ``explicit``, ``implicit``, ``rle`` (RLE Lossless) or ``j2k`` (JPEG 2000
    lossless). ``preamble`` False writes the data set without preamble and file meta."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import (ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage,
                             RLELossless, generate_uid)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if syntax == "implicit" else ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    if patient is not None:
        ds.PatientID = patient
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    if planted:
        for keyword, value in PLANTED.items():
            setattr(ds, keyword, value)
    arr = np.asarray(stored)
    if frames > 1:
        arr = np.stack([arr] * frames)
    bits = bits_stored or 8 * arr.dtype.itemsize
    ds.set_pixel_data(arr, photometric, bits)
    if slope is not None or intercept is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope if slope is not None else 1, intercept or 0
        ds.RescaleType = "US"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut is not None:
        from pydicom.dataset import Dataset
        from pydicom.sequence import Sequence

        item = Dataset()
        lut = np.asarray(voi_lut, dtype=np.uint16)
        item.add_new(0x00283002, "US", [len(lut), voi_first, 16])  # LUTDescriptor
        item.add_new(0x00283006, "US", lut.tolist())  # LUTData
        ds.VOILUTSequence = Sequence([item])
    if syntax == "rle":
        ds.compress(RLELossless, encoding_plugin="pydicom")
    elif syntax == "j2k":
        ds.compress(JPEG2000Lossless)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.preamble = None
        ds.file_meta = FileMetaDataset()
        ds.save_as(path, implicit_vr=syntax == "implicit", little_endian=True, enforce_file_format=False)
    return path


def identifiers(*patients: str) -> list[bytes]:
    """Every planted identifier and the given PatientIDs, as the bytes a grep looks for."""
    texts = [*PLANTED.values(), *patients]
    texts += [part for value in PLANTED.values() if "^" in value for part in value.split("^")]
    return sorted({t.encode() for t in texts})
