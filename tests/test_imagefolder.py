"""imagefolder: ROOT/{train,val}/CLASS/* as RGB, resized square (or resized and center cropped the way a
pretrained model's weights expect), normalized with its own statistics or the model's; val is reported."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from effrank_bench.errors import DataError
from effrank_bench.registry import default_registry
from effrank_bench.specs import DataRequest, Preprocess

IMAGENET = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
RED, BLUE = (255, 0, 0), (0, 0, 255)


def save(path: Path, color=RED, size=(12, 12), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def make_tree(root: Path) -> None:
    """Class a is red, class b blue: 6 training images each in mixed formats and sizes, 2 + 3 in val."""
    for i in range(6):
        ext = ("png", "jpg", "jpeg", "PNG", "png", "png")[i]
        save(root / "train" / "a" / f"{i}.{ext}", RED, size=(12 + i, 10))
        save(root / "train" / "b" / f"{i}.{ext}", BLUE, size=(10, 20))
    for i in range(2):
        save(root / "val" / "a" / f"{i}.png", RED)
    for i in range(3):
        save(root / "val" / "b" / f"{i}.png", BLUE)
    (root / "train" / "a" / "notes.txt").write_text("not an image")
    save(root / "train" / ".ipynb_checkpoints" / "x.png")  # hidden: not a class


def load(**request):
    return default_registry().dataset("imagefolder").load(DataRequest(**request))


def pixels(item: torch.Tensor, dataset) -> torch.Tensor:
    """An item back in 0..255, undoing the normalization its data set applied."""
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in (dataset.normalize.mean, dataset.normalize.std))
    return torch.round((item * std + mean) * 255)


def test_classes_splits_and_sizes(tmp_path):
    make_tree(tmp_path)
    splits = load(root=tmp_path, input_size=16, augment=False)
    assert (splits.num_classes, splits.modality, splits.input_size, splits.in_chans) == (2, "image", 16, 3)
    # 12 training images, ceil(10%) = 2 held out, one per class; val (5 images) is the test split.
    assert (len(splits.train), len(splits.val), len(splits.test)) == (10, 2, 5)
    assert sorted(splits.val[i][1] for i in range(2)) == [0, 1]
    assert [splits.test[i][1] for i in range(5)] == [0, 0, 1, 1, 1]
    for split in (splits.train, splits.val, splits.test):
        for i in range(len(split)):
            x, y = split[i]
            assert x.shape == (3, 16, 16) and x.dtype == torch.float32
            # Sorted folder names are the labels: a (red) is 0, b (blue) is 1; JPEG is within a few levels.
            expected = torch.tensor(RED if y == 0 else BLUE, dtype=torch.float32).view(3, 1, 1).expand(3, 16, 16)
            assert (pixels(x, split) - expected).abs().max() <= 3


def test_a_png_is_normalized_exactly_and_gray_becomes_rgb(tmp_path):
    make_tree(tmp_path)
    save(tmp_path / "val" / "a" / "0.png", 200, mode="L")
    splits = load(root=tmp_path, input_size=8, preprocess=Preprocess(**IMAGENET, crop=8))
    x, _ = splits.test[0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in IMAGENET.values())
    torch.testing.assert_close(x, (torch.full((3, 8, 8), 200 / 255) - mean) / std, rtol=0, atol=1e-6)
    red, _ = splits.test[1]
    torch.testing.assert_close(red[:, 0, 0], torch.tensor([2.2489083, -2.0357143, -1.8044444]), rtol=0, atol=1e-6)


def test_without_a_pretrained_model_the_folders_own_statistics_normalize(tmp_path):
    for part, n in (("train", 10), ("val", 1)):
        for cls, color in (("a", RED), ("b", BLUE)):
            for i in range(n):
                save(tmp_path / part / cls / f"{i}.png", color)
    splits = load(root=tmp_path, input_size=8)
    # 9 red and 9 blue training images (one of each held out): R and B have mean .5 and std .5; G never
    # varies (mean 0), so it is left unscaled. A red pixel is ((1 - .5)/.5, 0, (0 - .5)/.5).
    assert splits.train.normalize.mean == pytest.approx((0.5, 0.0, 0.5))
    assert splits.train.normalize.std == pytest.approx((0.5, 1.0, 0.5))
    red, label = splits.test[0]
    assert label == 0
    torch.testing.assert_close(red, torch.tensor([1.0, 0.0, -1.0]).view(3, 1, 1).expand(3, 8, 8))


def test_a_pretrained_models_images_are_resized_and_center_cropped_as_its_weights_were(tmp_path):
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for cls in ("a", "b"):
            path = tmp_path / part / cls / "0.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(path)  # wide: 40×20
    tv = default_registry().architecture("vit_b32_tv").preprocess  # Resize(256), CenterCrop(224), bilinear
    # At input size 14 (the crop, 224, scaled by 1/16) the shorter side goes to 256/16 = 16.
    splits = load(root=tmp_path, input_size=14, augment=False, preprocess=tv)
    x, _ = splits.test[0]
    with Image.open(tmp_path / "val" / "a" / "0.png") as image:
        expected = np.array(v2.CenterCrop(14)(v2.Resize(16)(image.convert("RGB"))))
    assert x.shape == (3, 14, 14)
    assert torch.equal(pixels(x, splits.test), torch.from_numpy(expected).permute(2, 0, 1).float())


def test_without_an_input_size_one_square_native_size_is_kept(tmp_path):
    for part, cls in [("train", "a"), ("train", "a2"), ("train", "b"), ("val", "a"), ("val", "a2"), ("val", "b")]:
        for i in range(2):
            save(tmp_path / part / cls / f"{i}.png", size=(24, 24) if part == "train" else (30, 17))
    splits = load(root=tmp_path)
    assert splits.input_size == 24 and splits.test[0][0].shape == (3, 24, 24)
    save(tmp_path / "train" / "b" / "odd.png", size=(20, 24))
    with pytest.raises(DataError, match=r"not all one square size \(0.png is 24×24, odd.png is 20×24\)"):
        load(root=tmp_path)


def test_training_items_are_crops_and_flips_and_the_rest_never_change(tmp_path):
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for cls in ("a", "b"):
            for i in range(3):
                path = tmp_path / part / cls / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    splits = load(root=tmp_path, input_size=16, augment=True)
    torch.manual_seed(0)
    draws = [splits.train[0][0] for _ in range(10)]
    assert all(d.shape == (3, 16, 16) for d in draws) and len({d.numpy().tobytes() for d in draws}) > 1
    # Padding 16 // 8 = 2: a crop shifts the picture by at most 2 pixels and fills the edge with black.
    plain = load(root=tmp_path, input_size=16, augment=False)
    source = pixels(plain.train[0][0], plain.train)
    padded = torch.nn.functional.pad(source, (2, 2, 2, 2))
    windows = torch.stack([padded[:, dy:dy + 16, dx:dx + 16] for dy in range(5) for dx in range(5)])
    windows = torch.cat([windows, windows.flip(-1)])
    assert all((windows == pixels(d, splits.train)).flatten(1).all(1).any() for d in draws)
    for split in ("val", "test"):
        dataset = getattr(splits, split)
        assert torch.equal(dataset[0][0], dataset[0][0])
        assert torch.equal(dataset[0][0], getattr(plain, split)[0][0])
    train = pickle.loads(pickle.dumps(splits.train))  # what a spawned DataLoader worker receives
    assert train[0][0].shape == (3, 16, 16) and train[0][1] == splits.train[0][1]


def test_val_must_have_the_classes_of_train(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "val" / "b").rename(tmp_path / "val" / "c")
    with pytest.raises(DataError, match="only in train: b; only in val: c"):
        load(root=tmp_path, input_size=16)


def test_missing_root_or_folders_name_the_layout(tmp_path):
    with pytest.raises(DataError, match=r"--data-root DIR with DIR/train/CLASS/\*\.png\|jpg\|jpeg"):
        load(input_size=16)
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{tmp_path / 'val'} is not a folder"):
        load(root=tmp_path, input_size=16)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{tmp_path / 'train' / 'a'} holds no .png/.jpg/.jpeg images"):
        load(root=tmp_path, input_size=16)


def test_an_unreadable_image_is_a_data_error_naming_it(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "val" / "b" / "2.png").write_bytes(b"not a png")
    splits = load(root=tmp_path, input_size=16)
    with pytest.raises(DataError, match=r"cannot read image .*val/b/2\.png"):
        splits.test[4]
