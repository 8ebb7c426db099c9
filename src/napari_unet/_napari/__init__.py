"""napari glue: reader, writer, sample data and widgets (the only Qt/napari code)."""
