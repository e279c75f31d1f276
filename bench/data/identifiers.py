"""The identifying fields of a DICOM header, and keeping them out of what bench says.

:data:`IDENTIFYING` lists the attributes of the DICOM PS3.15 Basic Application Level
Confidentiality Profile (Annex E, Table E.1-1) that name or point to a person, a visit or
a place: names, IDs, birth dates, addresses, accession numbers, study and instance UIDs,
dates and times, institutions, devices and free-text comments. bench reads two of them:
PatientID and StudyInstanceUID, for groups (:mod:`bench.data.header_groups`), and turns
them into salted hashes as it reads them; it never writes, prints or logs any of them.
:func:`scrub` is the safety net for text bench did not write itself (a decoder's message
about a file): every identifying value of the file is cut out of it.
"""

from __future__ import annotations

#: Attribute keywords of PS3.15 Table E.1-1 that identify a patient, a visit, a person,
#: a place or a device (attributes of pixel geometry and acquisition settings are not here).
IDENTIFYING = (
    # the patient
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDs", "OtherPatientNames",
    "OtherPatientIDsSequence", "PatientBirthDate", "PatientBirthTime", "PatientBirthName", "PatientAge",
    "PatientSex", "PatientSize", "PatientWeight", "PatientAddress", "PatientTelephoneNumbers",
    "PatientMotherBirthName", "MedicalRecordLocator", "EthnicGroup", "Occupation", "MilitaryRank",
    "BranchOfService", "CountryOfResidence", "RegionOfResidence", "PatientReligiousPreference",
    "PatientComments", "AdditionalPatientHistory", "PatientInsurancePlanCodeSequence",
    "ResponsiblePerson", "ResponsibleOrganization", "PregnancyStatus", "SmokingStatus",
    "MedicalAlerts", "Allergies", "PatientState", "PatientSexNeutered", "LastMenstrualDate",
    # the visit and the order
    "AccessionNumber", "StudyID", "AdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription",
    "RequestedProcedureID", "PerformedProcedureStepID", "ScheduledProcedureStepID", "FillerOrderNumberImagingServiceRequest",
    "PlacerOrderNumberImagingServiceRequest", "RequestAttributesSequence", "ReferencedPatientSequence",
    "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence", "ServiceEpisodeID",
    "ReasonForTheRequestedProcedure", "RequestingService",
    # unique identifiers
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID", "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID", "IrradiationEventUID", "DeviceUID", "ReferencedSOPInstanceUID",
    "ReferencedFrameOfReferenceUID", "StorageMediaFileSetUID", "ConcatenationUID", "DimensionOrganizationUID",
    "InstanceCreatorUID", "TargetUID", "UID",
    # dates and times
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate", "OverlayDate",
    "CurveDate", "AcquisitionDateTime", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime",
    "InstanceCreationTime", "OverlayTime", "CurveTime",
    # people
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence", "RequestingPhysician", "OperatorsName",
    "OperatorIdentificationSequence", "ScheduledPerformingPhysicianName", "ContentCreatorName",
    "VerifyingObserverName", "PersonName", "PersonAddress", "PersonTelephoneNumbers", "ConsultingPhysicianName",
    # places and devices
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    "StationName", "DeviceSerialNumber", "DetectorID", "GantryID", "PlateID", "CassetteID", "GeneratorID",
    "ScheduledStationName", "PerformedStationName", "PerformedLocation", "ScheduledProcedureStepLocation",
    "CurrentPatientLocation", "PatientInstitutionResidence", "ModifyingDeviceID", "SourceSerialNumber",
    # free text that may hold any of the above
    "StudyDescription", "SeriesDescription", "ImageComments", "RequestedProcedureDescription",
    "PerformedProcedureStepDescription", "DerivationDescription", "AcquisitionComments", "AdmittingDiagnosesCodeSequence",
    "ProtocolName", "TextString", "TextValue", "TopicTitle", "TopicAuthor", "TopicKeywords", "TopicSubject",
    "InterpretationText", "Impressions", "ResultsComments", "IdentifyingComments", "VisitComments",
    "FrameComments", "ContrastBolusAgent",
)

#: Values shorter than this are not cut out of text (a sex of "M" or an age of "5" would
#: cut every such letter); they identify no one alone.
_SHORTEST = 3


def identifying_values(ds) -> list[str]:
    """The text of every identifying attribute of the data set ``ds`` (sequences: their
    items' values too), longest first."""
    from pydicom.sequence import Sequence

    found: set[str] = set()

    def collect(dataset, depth: int = 0) -> None:
        for keyword in IDENTIFYING:
            value = dataset.get(keyword) if keyword in dataset else None
            if value is None:
                continue
            if isinstance(value, Sequence):
                for item in value if depth < 3 else ():
                    collect(item, depth + 1)
            elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                found.update(_texts(value))
            else:  # several values (OtherPatientIDs, ...)
                for item in value:
                    found.update(_texts(item))

    collect(ds)
    return sorted((v for v in found if len(v) >= _SHORTEST), key=len, reverse=True)


def _texts(value) -> set[str]:
    """A value as the strings it may be written as (a person name also as its parts)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8", "ignore")
        except Exception:  # pragma: no cover - decode with "ignore" does not raise
            return set()
    text = str(value).strip()
    out = {text}
    for part in text.replace("^", "\\").split("\\"):
        if part.strip():
            out.add(part.strip())
    return out


def scrub(text: str, ds) -> str:
    """``text`` with every identifying value of ``ds`` replaced by ``[removed]``."""
    try:
        values = identifying_values(ds)
    except Exception:  # a damaged header: say nothing that came from it
        return text.split(":")[0]
    for value in values:
        text = text.replace(value, "[removed]")
    return text
