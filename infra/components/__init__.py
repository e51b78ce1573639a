"""One `pulumi.ComponentResource` per concern; `__main__.py` wires them together."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import pulumi

ArgsT = TypeVar("ArgsT")


class Component(pulumi.ComponentResource, Generic[ArgsT]):
    """A component of type `flightpipe:infra:<class name>` built from one frozen args object.

    Pulumi's pattern for a component: chain to the base constructor, declare the children with
    the `parent` option, then `register_outputs` (https://www.pulumi.com/docs/concepts/resources/components/).
    Subclasses declare their children in `build`, parented through `self.child`.
    """

    def __init__(self, name: str, args: ArgsT, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"flightpipe:infra:{type(self).__name__}", name, None, opts)
        self.child = pulumi.ResourceOptions(parent=self)
        self.register_outputs(self.build(name, args))

    def build(self, name: str, args: ArgsT) -> Mapping[str, Any]:
        """Declare the children; return the outputs the engine shows for the component."""
        raise NotImplementedError
