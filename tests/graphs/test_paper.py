"""The paper network's problem: seeded parameters and minibatch, or loaded parameters."""

import pytest
import torch

from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.graphs.paper import PAPER_BATCH_SIZE, load_parameters, paper_problem


def test_paper_problem_is_a_function_of_its_seed(mnist_env):
    graph, (x, y) = paper_problem(seed=1, batch_size=4)
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((4, 784), torch.float32, (4,), torch.int64)
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    again, (x_again, y_again) = paper_problem(seed=1)
    assert x_again.shape[0] == PAPER_BATCH_SIZE
    # The minibatch is a prefix of one seeded permutation; the parameters do not depend on it.
    assert torch.equal(x_again[:4], x) and torch.equal(y_again[:4], y)
    for (name, p), q in zip(graph.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q), name
    other, (x_other, _) = paper_problem(seed=2, batch_size=4)
    assert not torch.equal(x_other, x)
    assert not torch.equal(other.expert.weight, graph.expert.weight)


def test_paper_problem_loads_a_state_dict_or_a_checkpoint(mnist_env, tmp_path):
    trained, _ = paper_problem(seed=2, batch_size=1)
    for name, state in [("state.pt", trained.state_dict()),
                        ("checkpoint.pt", {"model": trained.state_dict()})]:
        torch.save(state, tmp_path / name)
        graph, _ = paper_problem(seed=1, batch_size=1, parameters_file=str(tmp_path / name))
        for (key, p), q in zip(graph.named_parameters(), trained.parameters(), strict=True):
            assert torch.equal(p, q), (name, key)


def test_load_parameters_refuses_a_file_that_does_not_fit(tmp_path):
    small = ConditionalNetwork(ConditionalConfig(num_inputs=3, num_gater_hidden=2, num_gates=2))
    torch.save(small.state_dict(), tmp_path / "small.pt")
    with pytest.raises(ValueError, match="does not fit the paper network"):
        load_parameters(ConditionalNetwork(), str(tmp_path / "small.pt"))
    torch.save({"model": [1, 2]}, tmp_path / "list.pt")
    with pytest.raises(ValueError, match="is not a state dict of tensors"):
        load_parameters(ConditionalNetwork(), str(tmp_path / "list.pt"))
