"""Catalogue: SKUs, nodes and channels, external string ids mapped to dense ints.

SKU attributes are stored column-wise (numpy arrays) so that a catalogue of a
million SKUs costs tens of megabytes, not a Python object per SKU.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np

from core.errors import InvalidArgument, NotFound
from core.model import ChannelSpec, NodeSpec, NodeType, SkuSpec

MAX_CHANNELS = 64


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), dtype=array.dtype)
    grown[: len(array)] = array
    return grown


class _Interner:
    """Small string table for low-cardinality attributes (category, substitution group)."""

    def __init__(self) -> None:
        self.values: list[str] = [""]
        self.index: dict[str, int] = {"": 0}

    def code(self, value: str) -> int:
        code = self.index.get(value)
        if code is None:
            code = len(self.values)
            self.values.append(value)
            self.index[value] = code
        return code


class Catalog:
    def __init__(self) -> None:
        self.sku_index: dict[str, int] = {}
        self.sku_ids: list[str] = []
        self.sku_names: list[str] = []
        self._capacity = 0
        self.weight_lb = np.zeros(0, dtype=np.float64)
        self.dims_in = np.zeros((0, 3), dtype=np.float64)
        self.volume_in3 = np.zeros(0, dtype=np.float64)  # derived from dims_in
        self.longest_in = np.zeros(0, dtype=np.float64)
        self.unit_cost_micros = np.zeros(0, dtype=np.int64)
        self.price_micros = np.zeros(0, dtype=np.int64)
        self.category = np.zeros(0, dtype=np.int32)
        self.substitution_group = np.zeros(0, dtype=np.int32)
        self.categories = _Interner()
        self.substitution_groups = _Interner()
        self.nodes: list[NodeSpec] = []
        self.node_index: dict[str, int] = {}
        self.node_enabled = np.zeros(0, dtype=np.bool_)
        self.nodes_version = 0  # bumped by every node change (caches key on it)
        self.channels: list[ChannelSpec] = []
        self.channel_index: dict[str, int] = {}

    # ---- SKUs -------------------------------------------------------------
    @property
    def n_skus(self) -> int:
        return len(self.sku_ids)

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)

    def reserve_skus(self, count: int) -> None:
        """Grow the columns to hold `count` more SKUs (bulk loads avoid repeated copies)."""
        needed = self.n_skus + count
        if needed <= self._capacity:
            return
        capacity = max(needed, self._capacity + self._capacity // 2, 1024)
        self.weight_lb = _grown(self.weight_lb, capacity)
        self.dims_in = _grown(self.dims_in, capacity)
        self.volume_in3 = _grown(self.volume_in3, capacity)
        self.longest_in = _grown(self.longest_in, capacity)
        self.unit_cost_micros = _grown(self.unit_cost_micros, capacity)
        self.price_micros = _grown(self.price_micros, capacity)
        self.category = _grown(self.category, capacity)
        self.substitution_group = _grown(self.substitution_group, capacity)
        self._capacity = capacity

    def put_sku(self, spec: SkuSpec, dense: int) -> None:
        """Store `spec` at dense index `dense` (a new SKU takes the next index)."""
        if dense == self.n_skus:
            self.reserve_skus(1)
            self.sku_index[spec.sku_id] = dense
            self.sku_ids.append(spec.sku_id)
            self.sku_names.append(spec.name)
        elif dense < self.n_skus and self.sku_ids[dense] == spec.sku_id:
            self.sku_names[dense] = spec.name
        else:
            raise InvalidArgument(f"SKU index {dense} does not match {spec.sku_id!r}")
        self.weight_lb[dense] = spec.weight_lb
        self.dims_in[dense] = (spec.length_in, spec.width_in, spec.height_in)
        self.volume_in3[dense] = spec.length_in * spec.width_in * spec.height_in
        self.longest_in[dense] = max(spec.length_in, spec.width_in, spec.height_in)
        self.unit_cost_micros[dense] = spec.unit_cost_micros
        self.price_micros[dense] = spec.price_micros
        self.category[dense] = self.categories.code(spec.category)
        self.substitution_group[dense] = self.substitution_groups.code(spec.substitution_group)

    def sku_spec(self, dense: int) -> SkuSpec:
        length, width, height = (float(x) for x in self.dims_in[dense])
        return SkuSpec(
            sku_id=self.sku_ids[dense],
            name=self.sku_names[dense],
            weight_lb=float(self.weight_lb[dense]),
            length_in=length,
            width_in=width,
            height_in=height,
            unit_cost_micros=int(self.unit_cost_micros[dense]),
            price_micros=int(self.price_micros[dense]),
            category=self.categories.values[self.category[dense]],
            substitution_group=self.substitution_groups.values[self.substitution_group[dense]],
        )

    def sku(self, sku_id: str, field: str = "sku_id") -> int:
        dense = self.sku_index.get(sku_id)
        if dense is None:
            raise NotFound(f"unknown SKU {sku_id!r}", field)
        return dense

    def skus(self, sku_ids: Sequence[str], field: str = "sku_ids") -> np.ndarray:
        if not sku_ids:
            return np.zeros(0, dtype=np.int64)
        try:
            found = operator.itemgetter(*sku_ids)(self.sku_index)
        except (KeyError, TypeError):
            for i, sku_id in enumerate(sku_ids):
                if sku_id not in self.sku_index:
                    raise NotFound(f"unknown SKU {sku_id!r}", f"{field}[{i}]") from None
            raise
        if len(sku_ids) == 1:
            found = (found,)
        return np.fromiter(found, dtype=np.int64, count=len(sku_ids))

    # ---- nodes ------------------------------------------------------------
    def put_node(self, spec: NodeSpec, dense: int) -> None:
        self.nodes_version += 1
        if dense == self.n_nodes:
            self.nodes.append(spec)
            self.node_index[spec.node_id] = dense
            self.node_enabled = np.append(self.node_enabled, spec.enabled)
        elif dense < self.n_nodes and self.nodes[dense].node_id == spec.node_id:
            self.nodes[dense] = spec
            self.node_enabled[dense] = spec.enabled
        else:
            raise InvalidArgument(f"node index {dense} does not match {spec.node_id!r}")

    def node(self, node_id: str, field: str = "node_id") -> int:
        dense = self.node_index.get(node_id)
        if dense is None:
            raise NotFound(f"unknown node {node_id!r}", field)
        return dense

    # ---- channels ---------------------------------------------------------
    def put_channel(self, spec: ChannelSpec, dense: int) -> None:
        if dense == len(self.channels):
            if dense >= MAX_CHANNELS:
                raise InvalidArgument(f"at most {MAX_CHANNELS} channels")
            self.channels.append(spec)
            self.channel_index[spec.channel_id] = dense
        elif dense < len(self.channels) and self.channels[dense].channel_id == spec.channel_id:
            self.channels[dense] = spec
        else:
            raise InvalidArgument(f"channel index {dense} does not match {spec.channel_id!r}")

    def channel(self, channel_id: str, field: str = "channel_id") -> int:
        """Dense channel index; the empty id means 'no channel' (-1)."""
        if not channel_id:
            return -1
        dense = self.channel_index.get(channel_id)
        if dense is None:
            raise NotFound(f"unknown channel {channel_id!r}", field)
        return dense


__all__ = ["MAX_CHANNELS", "Catalog", "ChannelSpec", "NodeSpec", "NodeType", "SkuSpec"]
