"""Helpers the emitters share (the generator does not run files whose names start with '_')."""
from __future__ import annotations

from typing import Any


class EmitError(ValueError):
    """The schema does not offer what an emitter relies on."""


class Doc:
    """Local '#/...' reference resolution over the OpenRPC document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def resolve(self, node: Any) -> Any:
        seen: set[str] = set()
        while isinstance(node, dict) and "$ref" in node:
            pointer = node["$ref"]
            if not isinstance(pointer, str) or not pointer.startswith("#/") or pointer in seen:
                raise EmitError(f"unresolvable $ref {pointer!r}")
            seen.add(pointer)
            target: Any = self.doc
            for part in pointer[2:].split("/"):
                if not isinstance(target, dict) or part not in target:
                    raise EmitError(f"dangling $ref {pointer!r}")
                target = target[part]
            node = target
        return node


def is_event(method: dict[str, Any]) -> bool:
    """Events are the methods tagged `event` (sent by the gateway, never requests)."""
    tags = [t.get("name") for t in method.get("tags", []) if isinstance(t, dict)]
    return method.get("x-direction") == "server-to-client" or "event" in tags
