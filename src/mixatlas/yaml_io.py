"""The one YAML reader of MixAtlas: PyYAML's safe loader with a bounded alias expansion.

`yaml.safe_load` builds shared objects for aliases, so a "billion laughs" file of a few hundred bytes
loads as a small graph that expands to gigabytes as soon as anything walks it (validation, JSON, a
copy). `safe_load` here counts the nodes every alias stands for and refuses a file whose aliases expand
to more than `MAX_ALIAS_NODES` nodes, or that refers to a collection from inside itself.
"""

from __future__ import annotations

from typing import IO, Any

import yaml
from yaml import YAMLError

__all__ = ["MAX_ALIAS_NODES", "AliasBudgetError", "YAMLError", "safe_load"]

MAX_ALIAS_NODES = 10_000


class AliasBudgetError(yaml.MarkedYAMLError):
    """Aliases that expand past the budget, or a recursive alias (`problem` and `problem_mark` set, as
    PyYAML's own parse errors have them)."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that sums the expanded size of each alias while composing."""

    def __init__(self, stream: str | bytes | IO) -> None:
        super().__init__(stream)
        self._expanded = 0
        self._sizes: dict[int, int] = {}  # id(node) -> expanded node count, for finished nodes
        self._open: set[str] = set()  # anchors of collections still being composed

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise AliasBudgetError(f"recursive alias *{event.anchor} at {_at(event.start_mark)}; a "
                                       "collection cannot contain itself", event.start_mark)
            node = self.anchors.get(event.anchor)
            if node is not None:
                self._expanded += self._size(node)
                if self._expanded > MAX_ALIAS_NODES:
                    raise AliasBudgetError(
                        f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes (*{event.anchor} at "
                        f"{_at(event.start_mark)}); write the values out instead of repeating aliases",
                        event.start_mark,
                    )
        anchor = getattr(event, "anchor", None)
        collection = isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent)
        if anchor is not None and collection:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            if anchor is not None and collection:
                self._open.discard(anchor)

    def _size(self, node: yaml.Node) -> int:
        """Nodes `node` stands for when every alias inside it is written out."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, yaml.SequenceNode):
                children = node.value
            elif isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            else:
                children = []
            self._sizes[key] = 1 + sum(self._size(child) for child in children)
        return self._sizes[key]


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def safe_load(stream: str | bytes | IO) -> Any:
    """`yaml.safe_load` with the alias budget; every problem is a `yaml.YAMLError`."""
    loader = _BoundedLoader(stream)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
