"""Evaluation harness and exact evaluation (``sepo eval``)."""
