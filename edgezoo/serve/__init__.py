"""Serving exported ONNX files: an HTTP server on onnxruntime, and a Triton model repository writer."""
