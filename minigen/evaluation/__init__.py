"""Measuring models: sample quality and diversity (metrics.py), cost (cost.py), speed (bench.py)."""
