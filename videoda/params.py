"""Reading and checking ``params.yaml``: every bad value gets an error that names its key."""

from pathlib import Path

import yaml

from videoda.errors import ParamError
from videoda.presets import apply_preset


def load_params(path="params.yaml"):
    """params.yaml as every stage sees it: with the preset of its ``method`` applied (``videoda.presets``)."""
    path = Path(path)
    if not path.is_file():
        raise ParamError(f"{path}: parameter file not found")
    with open(path) as f:
        params = yaml.safe_load(f)
    if not isinstance(params, dict):
        raise ParamError(f"{path}: expected a mapping of parameter sections")
    return apply_preset(params)


class Section:
    """Typed access to one params section, e.g. ``Section(params, "train_source").int("iterations", lo=1)``."""

    def __init__(self, params, name=None):
        """``name=None`` reads top-level keys (e.g. ``seed``)."""
        if name is None:
            self.name, self.values = "", params
            return
        if name not in params or not isinstance(params[name], dict):
            raise ParamError(f"params.yaml: section '{name}' is missing")
        self.name, self.values = name + ".", params[name]

    def _get(self, key):
        node = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ParamError(f"params.yaml: {self.name}{key} is missing")
            node = node[part]
        return node

    def _check(self, key, value, lo, hi):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ParamError(f"params.yaml: {self.name}{key} = {value} is out of range [{lo}, {hi}]")
        return value

    def int(self, key, lo=None, hi=None):
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, int):
            raise ParamError(f"params.yaml: {self.name}{key} must be an integer, got {v!r}")
        return self._check(key, v, lo, hi)

    def float(self, key, lo=None, hi=None):
        v = self._get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ParamError(f"params.yaml: {self.name}{key} must be a number, got {v!r}")
        return self._check(key, float(v), lo, hi)

    def bool(self, key):
        v = self._get(key)
        if not isinstance(v, bool):
            raise ParamError(f"params.yaml: {self.name}{key} must be true or false, got {v!r}")
        return v

    def choice(self, key, choices):
        v = self._get(key)
        if v not in choices:
            raise ParamError(f"params.yaml: {self.name}{key} = {v!r} is not one of {list(choices)}")
        return v

    def str(self, key, optional=False):
        v = self._get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise ParamError(f"params.yaml: {self.name}{key} must be a non-empty string, got {v!r}")
        return v

    def list(self, key, kind=int):
        v = self._get(key)
        if not isinstance(v, list) or not v or not all(isinstance(x, kind) and not isinstance(x, bool) for x in v):
            raise ParamError(f"params.yaml: {self.name}{key} must be a non-empty list of {kind.__name__}, got {v!r}")
        return v

    def float_list(self, key, lo=None, hi=None):
        """A list of numbers (possibly empty), each in [lo, hi]."""
        v = self._get(key)
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            raise ParamError(f"params.yaml: {self.name}{key} must be a list of numbers, got {v!r}")
        return [self._check(key, float(x), lo, hi) for x in v]
