"""cifar10 / cifar100: python-version files read as they are, normalized the architecture's way or their own,
crop+flip on train, brought to a pretrained model's input size the way its weights were evaluated."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from effrank_bench.data import Batches
from effrank_bench.errors import DataError
from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest

# CIFAR-10's own statistics: what a model trained from scratch (no Preprocess) is fed with.
MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(3, 1, 1)
STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(3, 1, 1)
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def write_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str, *, bytes_keys: bool = False,
                **extra) -> None:
    # The files CIFAR ships: a pickled dict, 'data' N×3072 uint8 rows of R, G, B planes.
    batch = {"data": images.reshape(len(images), -1), label_key: labels.tolist(), **extra}
    if bytes_keys:
        batch = {k.encode(): v for k, v in batch.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def make_images(n: int, first_id: int, seed: int) -> np.ndarray:
    """Random images whose red pixel (16, 16) holds an id, so any item names the image it came from."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    images[:, 0, 16, 16] = np.arange(first_id, first_id + n)
    return images


def write_cifar10(root: Path, per_batch: int = 20, n_test: int = 8):
    """5 batches of ``per_batch`` images (labels cycle 0..9) and a test batch, in ROOT/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    images = make_images(5 * per_batch, 0, seed=1)
    labels = np.arange(5 * per_batch) % 10
    for i, name in enumerate(BATCHES):
        rows = slice(i * per_batch, (i + 1) * per_batch)
        write_batch(folder / name, images[rows], labels[rows], "labels")
    test_images, test_labels = make_images(n_test, 200, seed=2), (np.arange(n_test) * 3) % 10
    test_images[0, :, 0, 0] = (255, 0, 128)
    write_batch(folder / "test_batch", test_images, test_labels, "labels")
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return images, labels, test_images, test_labels


def normalized(image: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(image).float() / 255 - MEAN) / STD


def pixels(item: torch.Tensor) -> torch.Tensor:
    """An item back in uint8."""
    return torch.round((item * STD + MEAN) * 255).to(torch.uint8)


def load(name: str, **request) -> object:
    return default_registry().dataset(name).load(DataRequest(**request))


def items(dataset) -> list[tuple[torch.Tensor, int]]:
    return [dataset[i] for i in range(len(dataset))]


def test_cifar10_splits_hold_out_a_stratified_tenth_of_train_and_test_is_test_batch(tmp_path):
    images, labels, _, test_labels = write_cifar10(tmp_path)
    splits = load("cifar10", root=tmp_path, augment=False)
    assert (splits.modality, splits.input_size, splits.in_chans, splits.num_classes) == ("image", 32, 3, 10)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 8)
    train_ids = [int(pixels(x)[0, 16, 16]) for x, _ in items(splits.train)]
    val_ids = [int(pixels(x)[0, 16, 16]) for x, _ in items(splits.val)]
    # Together every training image exactly once, each with its label; 10% stratified = one per class.
    assert sorted(train_ids + val_ids) == list(range(100))
    assert [y for _, y in items(splits.train)] == labels[train_ids].tolist()
    assert sorted(y for _, y in items(splits.val)) == list(range(10))
    assert [y for _, y in items(splits.test)] == test_labels.tolist()
    assert [int(pixels(x)[0, 16, 16]) for x, _ in items(splits.test)] == list(range(200, 208))
    # The split is fixed: another load holds out the same images.
    again = load("cifar10", root=tmp_path, augment=False)
    assert [int(pixels(x)[0, 16, 16]) for x, _ in items(again.val)] == val_ids


def test_items_are_32x32_floats_normalized_with_cifars_own_statistics(tmp_path):
    images, _, test_images, _ = write_cifar10(tmp_path)
    splits = load("cifar10", root=tmp_path)
    x, _ = splits.test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    # Pixel (0, 0) is (255, 0, 128): (1 - .4914)/.2470, (0 - .4822)/.2435, (128/255 - .4465)/.2616.
    expected = torch.tensor([2.0591093, -1.9802875, 0.2120061])
    torch.testing.assert_close(x[:, 0, 0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(x, normalized(test_images[0]), rtol=0, atol=1e-6)
    v, _ = splits.val[0]
    torch.testing.assert_close(v, normalized(images[int(pixels(v)[0, 16, 16])]), rtol=0, atol=1e-6)


def test_a_pretrained_architecture_gets_its_own_mean_and_std(tmp_path):
    write_cifar10(tmp_path)
    vit_b32 = default_registry().architecture("vit_b32").preprocess  # timm's augreg weights: 0.5 and 0.5
    splits = load("cifar10", root=tmp_path, preprocess=vit_b32)
    x, _ = splits.test[0]
    # (255, 0, 128) -> (1 - .5)/.5, (0 - .5)/.5, (128/255 - .5)/.5
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, -1.0, 1 / 255]), rtol=0, atol=1e-6)
    tv = default_registry().architecture("vit_b32_tv").preprocess  # torchvision's: ImageNet's
    x, _ = load("cifar10", root=tmp_path, preprocess=tv).test[0]
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([2.2489083, -2.0357143, 0.4264924]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", ["vit_b32_tv", "vit_b32"])
def test_batches_resize_then_center_crop_as_the_weights_transforms_do(tmp_path, arch):
    write_cifar10(tmp_path, per_batch=2)
    preprocess = default_registry().architecture(arch).preprocess
    splits = load("cifar10", root=tmp_path, augment=False, preprocess=preprocess)
    batches = Batches(splits.test, batch_size=4, modality="image", input_size=224, device=torch.device("cpu"),
                      preprocess=preprocess)
    x, _ = next(iter(batches))
    assert x.shape == (4, 3, 224, 224)
    # The weights' transform (vit_b32_tv: Resize(256) + CenterCrop(224), bilinear; vit_b32: timm's 248,
    # bicubic) on the normalized 32×32 tensors: resize and crop commute with the per-channel normalization.
    mode = v2.InterpolationMode(preprocess.interpolation)
    native = torch.stack([splits.test[i][0] for i in range(4)])
    expected = v2.Compose([v2.Resize(preprocess.resize, interpolation=mode), v2.CenterCrop(224)])(native)
    torch.testing.assert_close(x, expected, rtol=0, atol=1e-5)
    if arch == "vit_b32_tv":
        # Upsampling bilinearly, torchvision's antialias=True default changes nothing ...
        plain = v2.Compose([v2.Resize(256, antialias=False), v2.CenterCrop(224)])(native)
        torch.testing.assert_close(x, plain, rtol=0, atol=1e-5)
        # ... and the paper's pipeline on PIL images differs only by PIL rounding its result to uint8.
        pil = np.stack([np.asarray(v2.CenterCrop(224)(v2.Resize(256)(Image.fromarray(im.permute(1, 2, 0).numpy()))))
                        for im in splits.test.images[:4]])
        mean, std = (torch.tensor(v).view(3, 1, 1) for v in (preprocess.mean, preprocess.std))
        levels = ((x * std + mean) * 255 - torch.from_numpy(pil).permute(0, 3, 1, 2)).abs().max().item()
        assert levels <= 1 + 1e-4


def crops_and_flips(image: np.ndarray, pad: int = 4) -> torch.Tensor:
    """Every 32×32 window of the zero-padded image, flipped or not: all that crop+flip can produce."""
    padded = torch.nn.functional.pad(torch.from_numpy(image), (pad,) * 4)
    windows = torch.stack([padded[:, dy:dy + 32, dx:dx + 32]
                           for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)])
    return torch.cat([windows, windows.flip(-1)])


def test_train_items_are_random_crops_and_flips_while_val_and_test_never_change(tmp_path):
    images, _, _, _ = write_cifar10(tmp_path)
    plain = load("cifar10", root=tmp_path, augment=False)
    augmented = load("cifar10", root=tmp_path, augment=True)
    torch.manual_seed(0)
    for split in ("val", "test"):
        for i in (0, 3):
            x1, x2 = getattr(augmented, split)[i][0], getattr(augmented, split)[i][0]
            assert torch.equal(x1, x2) and torch.equal(x1, getattr(plain, split)[i][0])
    x, _ = plain.train[5]
    source = images[int(pixels(x)[0, 16, 16])]
    assert all(torch.equal(plain.train[5][0], x) for _ in range(3))
    torch.testing.assert_close(x, normalized(source), rtol=0, atol=1e-6)

    draws = [augmented.train[5][0] for _ in range(12)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert len({d.numpy().tobytes() for d in draws}) > 1
    candidates = crops_and_flips(source)
    flipped = 0
    for d in draws:
        matches = (candidates == pixels(d)).flatten(1).all(1)  # first 81 unflipped windows, then flipped
        assert matches.any()
        flipped += bool(matches[81:].any() and not matches[:81].any())
    assert 0 < flipped < len(draws)
    assert not all(torch.equal(pixels(d), torch.from_numpy(source)) for d in draws)


def test_a_split_pickles_for_dataloader_workers_and_batches(tmp_path):
    write_cifar10(tmp_path)
    splits = load("cifar10", root=tmp_path, augment=True)
    train = pickle.loads(pickle.dumps(splits.train))  # what a spawned worker receives
    assert len(train) == 90 and train[0][0].shape == (3, 32, 32) and train[0][1] == splits.train[0][1]
    x, y = next(iter(torch.utils.data.DataLoader(train, batch_size=16)))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_cifar100_reads_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    images, test_images = make_images(1000, 0, seed=3), make_images(50, 0, seed=4)
    fine, test_fine = np.arange(1000) % 100, (np.arange(50) * 7) % 100
    # Files written with bytes keys, as a Python 2 pickle can be read; the coarse labels must be ignored.
    write_batch(folder / "train", images, fine, "fine_labels", bytes_keys=True, coarse_labels=(fine // 5).tolist())
    write_batch(folder / "test", test_images, test_fine, "fine_labels", bytes_keys=True,
                coarse_labels=(test_fine // 5).tolist())
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": [], "coarse_label_names": []}))
    splits = load("cifar100", root=tmp_path, augment=False)
    assert splits.num_classes == 100 and (len(splits.train), len(splits.val), len(splits.test)) == (900, 100, 50)
    assert sorted(y for _, y in items(splits.val)) == list(range(100))
    assert [y for _, y in items(splits.test)] == test_fine.tolist()


def test_missing_files_name_the_folder_and_the_way_out(tmp_path):
    with pytest.raises(DataError) as err:
        load("cifar10", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message
    assert "--download" in message and "--data-root" in message
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing: data_batch_3\)"):
        load("cifar10", root=tmp_path)
    with pytest.raises(DataError, match="cifar-100-python"):
        load("cifar100", root=tmp_path)


def test_default_root_is_effrank_bench_data(tmp_path, monkeypatch):
    monkeypatch.setenv("EFFRANK_BENCH_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError, match=str(tmp_path / "data" / "cifar-10-batches-py")):
        load("cifar10")
    write_cifar10(tmp_path / "data")
    assert len(load("cifar10").test) == 8


class FakeCIFAR10:
    """Stands in for torchvision's downloader: records the call and writes the tiny files."""

    calls: list[tuple[str, bool, bool]] = []

    def __init__(self, root: str, train: bool = True, download: bool = False):
        FakeCIFAR10.calls.append((root, train, download))
        if download and not (Path(root) / "cifar-10-batches-py" / "test_batch").exists():
            write_cifar10(Path(root))


def test_download_goes_through_torchvision_only_when_files_are_missing(tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.CIFAR10", FakeCIFAR10)  # imported here: seconds
    FakeCIFAR10.calls = []
    splits = load("cifar10", root=tmp_path, download=True)
    assert FakeCIFAR10.calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]
    assert (len(splits.train), len(splits.test)) == (90, 8)
    FakeCIFAR10.calls = []
    load("cifar10", root=tmp_path, download=True)
    assert FakeCIFAR10.calls == []


def test_a_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(root, train=True, download=False):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.CIFAR10", offline)
    with pytest.raises(DataError, match=f"could not download CIFAR-10 into {tmp_path} .*name resolution"):
        load("cifar10", root=tmp_path, download=True)


class Planted:
    def __init__(self, victim: Path):
        self.victim = victim

    def __reduce__(self):
        return os.remove, (str(self.victim),)


def test_unreadable_or_planted_batches_are_refused(tmp_path):
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    victim = tmp_path / "victim"
    victim.touch()
    (folder / "data_batch_2").write_bytes(pickle.dumps({"data": Planted(victim), "labels": []}))
    with pytest.raises(DataError, match=r"data_batch_2 as a CIFAR .*refusing to load \w+\.remove"):
        load("cifar10", root=tmp_path)
    assert victim.exists()
    (folder / "data_batch_2").write_bytes((folder / "data_batch_1").read_bytes()[:100])
    with pytest.raises(DataError, match="data_batch_2 as a CIFAR python-version batch"):
        load("cifar10", root=tmp_path)
    write_batch(folder / "data_batch_2", make_images(2, 0, seed=5), np.array([3, 10]), "labels")
    with pytest.raises(DataError, match="data_batch_2: expected one 'labels' in 0..9"):
        load("cifar10", root=tmp_path)
