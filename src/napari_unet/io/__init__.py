"""Reading and writing medical volumes (NIfTI, DICOM) with exact geometry."""
