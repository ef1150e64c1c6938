"""Runtimes: one small interface (open, describe, infer, close), one module per backend."""
