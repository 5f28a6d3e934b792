"""birdclef-pipeline: CPMP's 3rd-place BirdCLEF 2024 solution as a DVC + MLflow pipeline."""

__version__ = "0.1.0"
