"""The UNet, its task rules, intensity normalisation and model files."""
