"""Order-independent reductions over scenario chunks.

A run is cut into chunks c = 0..C-1, and workers each take a contiguous range of them. To get the
same bits for any number of workers, sums over chunks follow one fixed binary tree: node (L, j)
covers chunks [j 2^L, (j + 1) 2^L) and its value is left child + right child (or the left child
alone where the right one lies past C). A worker folds its chunks into the maximal nodes inside
its range, like a binary counter, holding O(log C) arrays; the driver completes the tree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Node = tuple[int, int]  # (level, index)


@dataclass
class TreeFold:
    """Streaming fold of per-chunk values into the canonical tree's nodes."""

    stack: list[tuple[Node, Any]] = field(default_factory=list)

    def push(self, chunk: int, value: Any) -> None:
        node: Node = (0, chunk)
        while self.stack:
            (level, index), left = self.stack[-1]
            if level == node[0] and index % 2 == 0 and index + 1 == node[1]:
                self.stack.pop()
                value = left + value
                node = (level + 1, index // 2)
            else:
                break
        self.stack.append((node, value))

    def nodes(self) -> dict[Node, Any]:
        return dict(self.stack)


def tree_total(nodes: Iterable[dict[Node, Any]], n_chunks: int) -> Any:
    """Complete the tree from the nodes the workers returned; value of the root."""
    known: dict[Node, Any] = {}
    for part in nodes:
        known.update(part)
    if n_chunks < 1:
        raise ValueError("tree_total needs at least one chunk")
    root_level = max(n_chunks - 1, 0).bit_length()

    def value(level: int, index: int) -> Any:
        if (level, index) in known:
            return known[(level, index)]
        if level == 0:
            raise KeyError(f"chunk {index} missing from the reduction")
        left = value(level - 1, 2 * index)
        right_first_chunk = (2 * index + 1) << (level - 1)
        if right_first_chunk >= n_chunks:
            return left
        return left + value(level - 1, 2 * index + 1)

    return value(root_level, 0)
