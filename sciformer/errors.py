"""User-facing errors: the CLI prints their message (one line, no traceback) and exits non-zero."""


class SciformerError(Exception):
    """A problem with the user's input (path, file, config, data, checkpoint) and what to do about it."""


class DataError(SciformerError):
    """Bad or unreadable data: names the file, variable and index."""


class CheckpointError(SciformerError):
    """A checkpoint that cannot be used as asked (other model, other channels, unexpected keys)."""


class ExportError(CheckpointError):
    """A model that cannot be exported to ONNX: names the family or operator and why."""


class ConfigError(SciformerError, ValueError):
    """A config field or flag with a value that cannot work: names the field or flag and the valid values."""
