"""Datasets vlmzoo generates itself: synthetic shapes for the bundled ``shapes-demo`` model."""
