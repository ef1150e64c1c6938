"""Put on PYTHONPATH by tests that prove the device side needs no PyTorch: importing torch fails."""

import importlib.abc
import sys

_BLOCKED = ("torch", "torchvision", "timm", "onnxsim", "onnxscript")


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"import of {name} blocked: this test simulates a device without PyTorch")
        return None


sys.meta_path.insert(0, _Block())
