"""Builders of test data (DICOM series, tiny models, batch folders) and widget helpers."""
