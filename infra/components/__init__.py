"""One `pulumi.ComponentResource` per concern; `__main__.py` wires them together."""
