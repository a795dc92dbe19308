"""How many students train together: ``--group N``, or ``auto``: as many as fit."""
from __future__ import annotations

import copy

import torch

from effrank_bench.factorize import factorize
from effrank_bench.setup import RunSetup
from effrank_bench.teacher import Teacher
from effrank_bench.train import Recipe, checked_loss, make_optimizer, student_step, tapped, teacher_outputs


def group_size(setup: RunSetup, teacher: Teacher, trials: int, rank: int) -> int:
    """``--group N`` as given; ``auto``: all ``trials`` on CPU (host memory holds many small students and
    the cores are the limit), on CUDA as many as :func:`cuda_capacity` measures for students of ``rank``, the
    largest of those to train. (A group holds one seed's trials: the layout
    splits the rest.)"""
    group = setup.config.group
    if group != "auto":
        return group
    if setup.device.type != "cuda" or trials <= 1:
        return max(1, trials)
    return max(1, min(trials, cuda_capacity(setup, teacher, rank)))


def cuda_capacity(setup: RunSetup, teacher: Teacher, rank: int) -> int:
    """Students that fit in ``--memory-fraction`` of the free GPU memory, by a probe of the largest one.

    The probe trains one step of a student of ``rank`` (the largest to train: a search's round of small ranks
    fits more students than the grid's largest would) and measures what stays allocated
    (weights, gradients, optimizer state, plus a copy for the best-epoch weights) and the transient
    peak of a step (activations), which students of a group take in turn, not at once.
    """
    config, device = setup.config, setup.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    student = copy.deepcopy(teacher.model)
    factorize(student, setup.sites, rank, init="random", qkv=config.qkv)
    setup.to_device(student).train().requires_grad_(True)
    recipe = Recipe(1, config.lr, config.weight_decay, amp=config.amp)
    optimizer, scheduler = make_optimizer(student, recipe, device, 1)
    x, y = next(iter(setup.batches(setup.splits.train)))
    needs = setup.parts.loss.uses_features
    branches = setup.parts.arch.branches
    with tapped(branches(teacher.model) if needs else None) as t_tap, \
            tapped(branches(student) if needs else None) as tap:
        target = teacher_outputs(teacher.model, t_tap, x, config.amp)
        student_step(student, tap, x, y, target, checked_loss(setup.parts.loss), config.loss_options, optimizer,
                     scheduler, config.amp)
    torch.cuda.synchronize(device)
    params = sum(p.numel() * p.element_size() for p in student.parameters())
    kept = torch.cuda.memory_allocated(device) - base + (params if config.select == "best" else 0)
    transient = max(0, torch.cuda.max_memory_allocated(device) - base - kept)
    del student, optimizer, scheduler, x, y
    torch.cuda.empty_cache()
    return int((free * config.memory_fraction - transient) // max(kept, 1))
