"""Trainer/config pairs, one per method (the shape of TRL)."""
