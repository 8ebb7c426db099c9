"""The ``napari-unet`` command line: one module per subcommand, all on the core library."""
