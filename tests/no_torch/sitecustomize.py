"""Put on PYTHONPATH by tests that prove the device side needs no PyTorch: importing torch fails."""

import importlib.abc
import os
import sys

# EDGEZOO_BLOCK_IMPORTS adds more (comma-separated), to test other missing optional dependencies.
_BLOCKED = ("torch", "torchvision", "timm", "onnxsim", "onnxscript") + tuple(
    m for m in os.environ.get("EDGEZOO_BLOCK_IMPORTS", "").split(",") if m)


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"import of {name} blocked: this test simulates a device without it", name=name)
        return None


sys.meta_path.insert(0, _Block())
