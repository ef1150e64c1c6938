"""The export pipeline (edgezoo.export.pipeline over an edgezoo.sources.ModelSource).

``edgezoo.export(source, ...)`` is the Python API (edgezoo.api.export). Because this subpackage is also
named ``export`` and Python binds ``edgezoo.export`` to it once it is imported, the package itself is made
callable and forwards to the API, so ``edgezoo.export(...)`` works whatever was imported first.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from edgezoo.api import export

        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
