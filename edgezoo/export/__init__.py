"""Conversion pipeline: passes over PyTorch modules, ONNX export, int8/fp16 quantization, TensorRT engines."""
