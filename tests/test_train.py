"""The trainer's recipe and batches: optimizers, schedule, loader workers."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from effrank_bench.data import Batches, default_workers
from effrank_bench.train import Recipe, make_optimizer


def test_sgd_is_nesterov_momentum_and_adamw_is_the_default():
    model = nn.Linear(4, 2)
    sgd, _ = make_optimizer(model, Recipe(1, 0.1, 0.0, optimizer="sgd"), torch.device("cpu"), 10)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 0.0
    adamw, _ = make_optimizer(model, Recipe(1, 0.1, 0.05), torch.device("cpu"), 10)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["weight_decay"] == 0.05


def test_the_schedule_warms_up_linearly_then_decays_to_zero():
    model = nn.Linear(4, 2)
    optimizer, scheduler = make_optimizer(model, Recipe(1, 1.0, warmup_fraction=0.2), torch.device("cpu"), 10)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:2] == [0.5, 1.0]  # 2 warm-up steps of 10
    assert lrs[2] == 1.0 and lrs[-1] < 0.05 and all(a >= b for a, b in zip(lrs[1:], lrs[2:]))


def test_workers_deliver_the_same_batches_in_the_same_order():
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2), torch.arange(10))
    kwargs = dict(batch_size=3, modality="image", input_size=4, device=torch.device("cpu"), shuffle=True, seed=7)
    inline = [(x.clone(), y.clone()) for x, y in Batches(data, **kwargs)]
    pooled = [(x.clone(), y.clone()) for x, y in Batches(data, workers=1, **kwargs)]
    assert [y.tolist() for _, y in inline] == [y.tolist() for _, y in pooled]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(inline, pooled))
    assert inline[0][0].shape == (3, 1, 4, 4)  # resized from 2×2 on the device


def test_a_limit_cuts_every_pass_to_its_first_batches():
    data = TensorDataset(torch.arange(40, dtype=torch.float32).reshape(10, 1, 2, 2), torch.arange(10))
    kwargs = dict(batch_size=3, modality="image", input_size=2, device=torch.device("cpu"), shuffle=True, seed=7)
    whole, cut = Batches(data, **kwargs), Batches(data, limit=2, **kwargs)
    assert (len(whole), len(cut)) == (4, 2)
    # The same shuffled order, stopped early: the first two batches of the whole pass.
    assert [y.tolist() for _, y in cut] == [y.tolist() for _, y in list(Batches(data, **kwargs))[:2]]
    assert len(Batches(data, limit=9, **kwargs)) == 4  # a limit past the end changes nothing


def test_channels_last_batches_keep_their_values():
    data = TensorDataset(torch.randn(4, 3, 5, 5), torch.zeros(4, dtype=torch.long))
    kwargs = dict(batch_size=4, modality="image", input_size=5, device=torch.device("cpu"))
    (plain, _), = list(Batches(data, **kwargs))
    (last, _), = list(Batches(data, channels_last=True, **kwargs))
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(plain, last)


def test_loader_workers_only_on_cuda_and_only_for_data_that_decodes_per_item():
    in_memory = TensorDataset(torch.zeros(4, 1))

    class Decoded(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(1), 0

    assert default_workers(torch.device("cpu"), Decoded()) == 0
    assert default_workers(torch.device("cuda"), in_memory) == 0
    assert 1 <= default_workers(torch.device("cuda"), Decoded()) <= 8
