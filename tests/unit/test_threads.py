"""CPU ranks share their node's cores: more torch threads than cores makes every rank spin-wait."""

from __future__ import annotations

from rprm_ray.training import cpu_threads_per_rank


def test_ranks_on_one_node_split_its_cores() -> None:
    assert cpu_threads_per_rank([("10.0.0.1", 2)]) == [2]
    assert cpu_threads_per_rank([("10.0.0.1", 2), ("10.0.0.1", 2)]) == [1, 1]
    assert cpu_threads_per_rank([("10.0.0.1", 16)] * 3) == [5, 5, 5]


def test_ranks_on_other_nodes_keep_their_own_cores() -> None:
    nodes = [("10.0.0.1", 8), ("10.0.0.2", 4), ("10.0.0.1", 8)]
    assert cpu_threads_per_rank(nodes) == [4, 4, 4]
    assert cpu_threads_per_rank([("a", 8), ("b", 4)]) == [8, 4]


def test_more_ranks_than_cores_still_get_one_thread_each() -> None:
    assert cpu_threads_per_rank([("a", 2)] * 3) == [1, 1, 1]
