"""edgezoo: paper-exact mobile CNNs, exported to verified int8/fp16 ONNX, profiled and served.

``create_model``/``list_models``/``get_spec`` need PyTorch and load on first use, so that importing edgezoo
on a device with only onnxruntime stays cheap and works.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "get_spec", "export", "resolve_source"]


def __getattr__(name: str):
    if name in ("create_model", "list_models", "get_spec", "list_specs"):
        from edgezoo.models import registry

        return getattr(registry, name)
    if name == "export":  # edgezoo.export(source, ...): the Python API of `edgezoo export`
        from edgezoo.api import export

        return export
    if name == "resolve_source":
        from edgezoo.sources import resolve_source

        return resolve_source
    raise AttributeError(f"module 'edgezoo' has no attribute {name!r}")
