"""Cost of a model: parameters, MACs, latency and peak memory."""
from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from effrank_bench.errors import ConfigError
from effrank_bench.factorize import LowRankLinear
from effrank_bench.records import Cost

# Fused attention kernels that FlopCounterMode's registry has no formula for, so
# their matmuls would count as zero. On CPU, F.scaled_dot_product_attention runs
# _scaled_dot_product_flash_attention_for_cpu (timm's ViTs use it by default);
# the other two are the MPS and out-of-tree-backend equivalents. All take
# (query, key, value, ...) first. Not every torch version has every op.
_UNCOUNTED_FUSED_SDPA_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_attention_math_for_mps",
    "_scaled_dot_product_fused_attention_overrideable",
)


def count_params(model: nn.Module, factorized: Iterable[nn.Module] = ()) -> tuple[int, int]:
    """Return (all parameters, parameters inside `factorized`), each shared tensor once."""
    total = sum(p.numel() for p in model.parameters())
    # Keyed by identity so a module listed twice, or nested in another listed one, counts once.
    in_factorized = {id(p): p for module in factorized for p in module.parameters()}
    return total, sum(p.numel() for p in in_factorized.values())


def _fused_sdpa_flops(query_shape, key_shape, value_shape, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    # Same formula as torch's sdpa_flop_count (q @ k^T, then scores @ v), written
    # out because that helper is private. Leading dims of the query are batch and
    # query heads, which also covers grouped-query attention.
    *batch, q_len, qk_dim = query_shape
    k_len = key_shape[-2]
    v_dim = value_shape[-1]
    macs = math.prod(batch) * q_len * k_len * (qk_dim + v_dim)
    # FlopCounterMode sums FLOPs, 2 per MAC, like its built-in formulas.
    return 2 * macs


def _fused_sdpa_mapping() -> dict[Any, Any]:
    return {
        getattr(torch.ops.aten, name): _fused_sdpa_flops
        for name in _UNCOUNTED_FUSED_SDPA_OPS
        if hasattr(torch.ops.aten, name)
    }


@contextmanager
def _inference(model: nn.Module) -> Iterator[None]:
    """Run in eval mode without autograd, then restore every submodule's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _mha_fastpath_disabled() -> Iterator[None]:
    # Without autograd, nn.MultiheadAttention and nn.TransformerEncoderLayer run one
    # fused op (_native_multi_head_attention / _transformer_encoder_layer_fwd) that
    # FlopCounterMode counts as zero, projections included; the slow path runs
    # the same math as countable linear and bmm ops.
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass of `example`, attention matmuls included; a LowRankLinear's by its
    formula (:meth:`LowRankLinear.macs`: at rank 1 torch multiplies a split projection's B factors elementwise,
    which the flop counter counts as nothing)."""
    return _counted_pass(model, example)[0]


def _counted_pass(model: nn.Module, example: torch.Tensor, watched: Iterable[str] = ()) -> tuple[int, dict[str, int]]:
    """:func:`count_macs`, and the MACs spent inside each layer at a path of ``watched`` in that pass (all its
    calls), read off the same counter as the layer is entered and left."""
    counter = FlopCounterMode(display=False, custom_mapping=_fused_sdpa_mapping())
    correction, entered = [0], {}
    inside = dict.fromkeys(watched, 0)

    def flops() -> int:  # so far in the pass, each LowRankLinear's by its formula
        return counter.get_total_flops() + correction[0]

    def enter(key: Any):
        return lambda module, args: entered.__setitem__(key, flops())

    def leave_low_rank(module: nn.Module, args: tuple, output: Any) -> None:
        correction[0] += 2 * module.macs(args[0].shape) - (flops() - entered.pop(id(module)))

    def leave_watched(path: str):
        def leave(module: nn.Module, args: tuple, output: Any) -> None:
            inside[path] += flops() - entered.pop(path)
        return leave

    # A LowRankLinear's hooks first: a watched one is read after its correction.
    handles = [h for m in model.modules() if isinstance(m, LowRankLinear)
               for h in (m.register_forward_pre_hook(enter(id(m))), m.register_forward_hook(leave_low_rank))]
    handles += [h for path in inside for h in (model.get_submodule(path).register_forward_pre_hook(enter(path)),
                                               model.get_submodule(path).register_forward_hook(leave_watched(path)))]
    try:
        with _inference(model), _mha_fastpath_disabled(), counter:
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return flops() // 2, {path: value // 2 for path, value in inside.items()}


#: A layer's input in a counted pass: its shape and dtype.
_Input = tuple[tuple[int, ...], torch.dtype]


@dataclass(frozen=True)
class MacProfile:
    """The MACs of one forward pass of a model on one example, and of each of some of its layers in that pass
    with the inputs it took there: enough to count a copy of the model whose layers at those paths were swapped
    for others (a factorized student), the rest of the copy computing what the model did."""

    total: int  # the whole pass's MACs
    device: torch.device  # where the example was, and where the layers' inputs are made to count them
    #: path -> the layer's MACs in the pass and its inputs, one per call; only layers called as a module of
    #: one tensor (a layer read some other way, or never called, is left out: a copy swapping it is counted whole)
    layers: dict[str, tuple[int, tuple[_Input, ...]]]

    def swapped(self, replaced: Mapping[str, nn.Module]) -> int | None:
        """MACs of the profiled model with each layer at a path of ``replaced`` swapped for its module; None where
        a path's calls were not recorded."""
        if any(path not in self.layers for path in replaced):
            return None
        swapped = _layers_macs([(module, self.layers[path][1]) for path, module in replaced.items()], self.device)
        return self.total + swapped - sum(self.layers[path][0] for path in replaced)


def profile_macs(model: nn.Module, example: torch.Tensor, layers: Iterable[str]) -> MacProfile:
    """:func:`count_macs` of ``model`` on ``example``, with the MACs and inputs of the layers at the paths
    ``layers`` in that pass (see :class:`MacProfile`)."""
    calls: dict[str, list[_Input]] = {path: [] for path in layers}
    unusable = set()

    def recorder(path: str):
        def record(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
                calls[path].append((tuple(args[0].shape), args[0].dtype))
            else:
                unusable.add(path)
        return record

    handles = [model.get_submodule(path).register_forward_pre_hook(recorder(path), with_kwargs=True)
               for path in calls]
    try:
        total, inside = _counted_pass(model, example, calls)
    finally:
        for handle in handles:
            handle.remove()
    return MacProfile(total, example.device, {path: (inside[path], tuple(inputs)) for path, inputs in calls.items()
                                              if inputs and path not in unusable})


class StudentMacs:
    """Students' MACs from their teacher's :class:`MacProfile`, trusted once a student's agree with a whole
    count of it: the first student the profile counts is also counted whole, and where the two differ (a layer
    shared by two paths, or called as ``layer.forward(x)``, which hooks do not see) every student is counted
    whole."""

    def __init__(self, profile: MacProfile, example: torch.Tensor):
        self.profile, self.example = profile, example
        self.trusted: bool | None = None  # None until a student has been counted both ways

    def __call__(self, student: nn.Module, replaced: Mapping[str, nn.Module]) -> int:
        """The MACs of ``student``, the profiled model with the layers ``replaced`` (by path) swapped."""
        derived = None if self.trusted is False else self.profile.swapped(replaced)
        if derived is not None and self.trusted:
            return derived
        whole = count_macs(student, self.example)
        if derived is not None:
            self.trusted = derived == whole
        return whole


def _layers_macs(calls: Iterable[tuple[nn.Module, Iterable[_Input]]], device: torch.device) -> int:
    """MACs of each layer's calls on each of its inputs (a student's swapped layers, never part of a counted
    pass): a LowRankLinear's by its formula, any other layer's counted on zeros of that shape, in one counted
    pass for all (FlopCounterMode takes about 1 ms a linear layer on CPU)."""
    calls = list(calls)
    known = sum(layer.macs(shape) for layer, inputs in calls if isinstance(layer, LowRankLinear) for shape, _ in inputs)
    counted = [(layer, inputs) for layer, inputs in calls if not isinstance(layer, LowRankLinear)]
    if not counted:
        return known
    counter = FlopCounterMode(display=False, custom_mapping=_fused_sdpa_mapping())
    with contextlib.ExitStack() as stack:
        for layer, _ in counted:
            stack.enter_context(_inference(layer))
        stack.enter_context(_mha_fastpath_disabled())
        stack.enter_context(counter)
        for layer, inputs in counted:
            for shape, dtype in inputs:
                layer(torch.zeros(shape, dtype=dtype, device=device))
    return known + counter.get_total_flops() // 2


def _synchronize(device: torch.device) -> None:
    # CUDA kernels run asynchronously; the clock must wait for them to finish.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def _one_thread_on_cpu(device: torch.device) -> Iterator[None]:
    """On CPU, torch computes on one thread while the context runs (its thread count put back after)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def forward_times_ms(model: nn.Module, example: torch.Tensor, *, warmup: int = 5, repeats: int = 30) -> list[float]:
    """Wall time in milliseconds of each of ``repeats`` forward passes of `example`, after ``warmup`` untimed.

    On CPU the passes run on one thread, as torch.utils.benchmark's Timer runs them by default: the same for
    every model timed, and steady on a shared machine. With two threads and another process busy on one of
    two cores, micro_vit's median went from 1.0 to 176 ms, each parallel region waiting for a thread the host
    had set aside; on one thread it stayed at 1.0 ms (2026-11-27).
    """
    if warmup < 0:
        raise ConfigError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    times = []
    with _inference(model), _one_thread_on_cpu(example.device):
        for _ in range(warmup):
            model(example)
        for _ in range(repeats):
            _synchronize(example.device)
            start = time.perf_counter()
            model(example)
            _synchronize(example.device)
            times.append((time.perf_counter() - start) * 1000.0)
    return times


def interquartile_range(times: list[float]) -> float | None:
    """The spread of ``times`` (p75 − p25, in their unit): how far a median of them can be trusted on a busy
    machine. None for a single time."""
    if len(times) < 2:
        return None
    low, _, high = statistics.quantiles(times, n=4, method="inclusive")
    return high - low


def peak_memory_mb(model: nn.Module, example: torch.Tensor) -> float | None:
    """Peak allocated CUDA memory in MiB during one forward pass, weights included.

    None off CUDA: torch keeps allocator statistics only for CUDA devices, and a
    process-wide figure such as RSS would mix in everything else the process holds.
    """
    device = example.device
    if device.type != "cuda":
        return None
    _synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    with _inference(model):
        model(example)
    _synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def measure(
    model: nn.Module,
    example: torch.Tensor,
    *,
    factorized: Iterable[nn.Module] = (),
    warmup: int = 5,
    repeats: int = 30,
    time_it: bool = True,
    macs: int | None = None,
) -> Cost:
    """Every cost of `model` on `example`: MACs per sample (its first; ``macs`` where they are known, say from a
    :class:`MacProfile`), latency and memory of the batch.

    Latency (the median of the timed passes, and their interquartile range) is None when `time_it` is false.
    """
    params, factorized_params = count_params(model, factorized)
    times = forward_times_ms(model, example, warmup=warmup, repeats=repeats) if time_it else None
    return Cost(
        params=params,
        factorized_params=factorized_params,
        macs=count_macs(model, example[:1]) if macs is None else macs,
        latency_ms=statistics.median(times) if times else None,
        peak_memory_mb=peak_memory_mb(model, example),
        latency_iqr_ms=interquartile_range(times) if times else None,
    )
