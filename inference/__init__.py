"""Loading trained or official checkpoints, attribute synthesis, evaluation metrics and reports."""
