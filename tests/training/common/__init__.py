"""Tests of the shared training pieces (training/common)."""
