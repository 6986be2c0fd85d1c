"""Modules, state paths, and the split/merge of a module into plain arrays.

A `Module` is an ordinary Python object; its states are found by walking
its attributes and the lists, tuples and dicts they hold. A state's *path* is the
sequence of attribute names and container keys that leads to it, for example
`('layers', 0, 'w')`. A state reachable along two paths is reported once, at
the first path in attribute order.

Examples:
    >>> import jax.numpy as jnp
    >>> import statejax as sj
    >>> class MLP(sj.Module):
    ...     def __init__(self):
    ...         self.layers = [sj.ParamState(jnp.ones(2)), sj.ParamState(jnp.ones(3))]
    ...         self.steps = sj.ShortTermState(jnp.array(0))
    >>> list(MLP().states(sj.ParamState))
    [('layers', 0), ('layers', 1)]
"""

# The public face of the graph package. Its modules, one job each and all private:
# `_node_types` (the node-type table), `_containers` (StateMapping, StateTree),
# `_walk` (iteration, states, nodes), `_graphdef` (the GraphDef format), `_flatten`
# (flatten, unflatten), `_operations` (treefy_*, update_states, pop_states, graphdef,
# clone), `_context` (split/merge contexts), `_convert` (graph_to_tree, tree_to_graph)
# and `_node` (Module). Other statejax modules import graph names from here only.
# (No `from __future__ import annotations`: it would add a public name.)

from statejax.graph._containers import FlattedDict, NestedDict, StateMapping, StateTree
from statejax.graph._context import MergeContext, SplitContext, merge_context, split_context
from statejax.graph._convert import NodeStates, graph_to_tree, tree_to_graph
from statejax.graph._flatten import flatten, unflatten
from statejax.graph._graphdef import (
    GraphDef,
    NodeEdge,
    NodeSpec,
    PytreeEdge,
    PytreeType,
    RefMap,
    StateEdge,
    StateLeafEdge,
    Static,
    StaticEdge,
)
from statejax.graph._node import Module, Node
from statejax.graph._node_types import register_graph_node_type
from statejax.graph._operations import (
    clone,
    graphdef,
    pop_states,
    treefy_merge,
    treefy_split,
    treefy_states,
    update_states,
)
from statejax.graph._walk import MAX_INT, iter_leaf, iter_node, iter_states, nodes, states

__all__ = [
    "MAX_INT",
    "FlattedDict",
    "GraphDef",
    "MergeContext",
    "Module",
    "NestedDict",
    "Node",
    "NodeEdge",
    "NodeSpec",
    "NodeStates",
    "PytreeEdge",
    "PytreeType",
    "RefMap",
    "SplitContext",
    "StateEdge",
    "StateLeafEdge",
    "StateMapping",
    "StateTree",
    "Static",
    "StaticEdge",
    "clone",
    "flatten",
    "graph_to_tree",
    "graphdef",
    "iter_leaf",
    "iter_node",
    "iter_states",
    "merge_context",
    "nodes",
    "pop_states",
    "register_graph_node_type",
    "split_context",
    "states",
    "tree_to_graph",
    "treefy_merge",
    "treefy_split",
    "treefy_states",
    "unflatten",
    "update_states",
]
