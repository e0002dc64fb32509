"""Model families and their named sizes.

``names()`` lists the sizes, ``get(name, **overrides)`` builds one, ``load(path)`` reads an export.
"""

from sciformer.models.export import load, save
from sciformer.models.registry import config, get, model_class, names, register

__all__ = ["config", "get", "load", "model_class", "names", "register", "save"]
