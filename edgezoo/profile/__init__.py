"""Profilers: latency (latency.py), per-node MACs and memory traffic (graph.py), roofline, ShuffleNetV2 guidelines."""
