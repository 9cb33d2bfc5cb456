"""``ts.torch_handler.unit_tests.models.base_model``: the argmax model of TorchServe's tests."""

from __future__ import annotations

import torch


class ArgmaxModel(torch.nn.Module):
    """Returns the index of the largest value of each row of its first input."""

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.argmax(inputs[0], 1)


def save_pt_file(filepath: str = "base_model.pt") -> None:
    """Write the (empty) state dict of ``ArgmaxModel`` to ``filepath``."""
    torch.save(ArgmaxModel().state_dict(), filepath)
