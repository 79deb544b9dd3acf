"""Data for training, calibration and validation: sources, checks and sample selection."""
