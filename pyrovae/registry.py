"""One name -> class table per kind of component (priors, likelihoods), and the one function
that turns a declarative spec (a name, a ``{"kind": name, ...}`` table, or an object) into one."""

import inspect

from torch import nn

from .config import nearest

__all__ = ["Registry", "Component", "hold_callable"]


class Component(nn.Module):
    """Base of priors and likelihoods: records the arguments it was built with, so a registered
    component states its own declarative ``spec`` (``{"kind": name, **arguments}``), the table a
    TOML file or a checkpoint rebuilds it from."""

    def __new__(cls, *args, **kwargs):
        instance = super().__new__(cls)
        instance.__dict__["_arguments"] = (args, kwargs)
        return instance

    @property
    def spec(self):
        """``{"kind": name, **arguments}`` for a registered class, ``{"kind": "custom"}`` otherwise."""
        held = self.__dict__.get("_spec")
        if held is not None:
            return held
        name = type(self).__dict__.get("registered_name")
        if name is None:
            return {"kind": "custom"}
        args, kwargs = self.__dict__.get("_arguments", ((), {}))
        bound = inspect.signature(type(self).__init__).bind(self, *args, **kwargs).arguments
        return {"kind": name, **{k: v for k, v in list(bound.items())[1:]}}


class Registry:
    """Maps names to component classes; ``build`` accepts the three spellings a user writes."""

    def __init__(self, what):
        self.what = what
        self._classes = {}

    def register(self, name):
        """A class decorator: ``@PRIORS.register("name")``."""

        def decorator(cls):
            if name in self._classes:
                raise ValueError(f"a {self.what} named {name!r} is registered already")
            self._classes[name] = cls
            cls.registered_name = name
            return cls

        return decorator

    def unregister(self, name):
        """Removes ``name`` (a test's or a session's own registration)."""
        cls = self._classes.pop(name)
        if cls.__dict__.get("registered_name") == name:
            del cls.registered_name

    def holds(self, cls):
        """Whether ``cls`` is one of the registered classes."""
        return any(cls is registered for registered in self._classes.values())

    def names(self):
        return sorted(self._classes)

    def __contains__(self, name):
        return name in self._classes

    def __getitem__(self, name):
        try:
            return self._classes[name]
        except KeyError:
            raise ValueError(f"unknown {self.what} {name!r}; choose one of {self.names()}{nearest(str(name), self._classes)}") from None

    def build(self, spec):
        """``"name"`` or ``{"kind": "name", **kwargs}`` -> a new instance, kwargs checked against
        the class's signature so a misspelt argument names the valid ones."""
        if isinstance(spec, str):
            kind, kwargs = spec, {}
        elif isinstance(spec, dict):
            if "kind" not in spec:
                raise ValueError(f"a {self.what} table needs a 'kind' key naming one of {self.names()}; got {spec}")
            kwargs = {k: v for k, v in spec.items() if k != "kind"}
            kind = spec["kind"]
        else:
            raise TypeError(f"a {self.what} must be a name, a {{'kind': ...}} table or an object; got {spec!r}")
        cls = self[kind]
        signature = inspect.signature(cls.__init__)
        try:
            signature.bind(None, **kwargs)
        except TypeError as error:
            allowed = [p for p in signature.parameters if p != "self"]
            raise ValueError(
                f"bad arguments {kwargs} for {self.what} {kind!r} ({error}); it takes {allowed or 'no arguments'}"
            ) from None
        return cls(**kwargs)


def hold_callable(owner, fn):
    """Keeps a user's callable on a module as ``owner.fn``: registered as a submodule when it is
    one (its parameters then train), a plain attribute otherwise; records a "custom" spec."""
    if isinstance(fn, nn.Module):
        owner.fn = fn
    else:
        owner.__dict__["fn"] = fn
    owner.__dict__["_spec"] = {"kind": "custom", "callable": getattr(fn, "__qualname__", type(fn).__name__)}
