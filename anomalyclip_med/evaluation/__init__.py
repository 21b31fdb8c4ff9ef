"""Evaluation: benchmark datasets (per-class tables) and hospital cohorts (per-case metrics, reports, figures)."""
