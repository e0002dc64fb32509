"""Model families and their named sizes.

``names()`` lists the sizes, ``get(name, **overrides)`` builds one, ``load(path)`` reads a saved model, and
``spec(model)`` is a family's contract with adaptation and export (``sciformer.models.spec``).
"""

from sciformer.models.export import save
from sciformer.models.registry import config, get, model_class, names, register
from sciformer.models.spec import spec_of as spec


def load(path):
    """The trained model (eval mode) from an export or converted directory, or a ``.ckpt``; LoRA merged."""
    from sciformer.checkpoints import read

    return read(path).build()


__all__ = ["config", "get", "load", "model_class", "names", "register", "save", "spec"]
