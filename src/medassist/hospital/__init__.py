"""Speaking the hospital's language: results as DICOM objects (SEG, SR) and FHIR resources, DICOMweb to and from a
PACS, and an audit trail of every access to patient data."""
