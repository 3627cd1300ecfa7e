"""The data-set readers on small files written here in each standard format (IDX, the
CIFAR-10 pickle, the SVHN .mat), the papers' splits, the search for the files and the
download's offline failure. Nothing here touches the network."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from scipy.io import savemat

from suites import datasets
from suites.datasets import DataError


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def idx_bytes(a: np.ndarray) -> bytes:
    """IDX of unsigned bytes: 00 00 08 ndim, big-endian sizes, data."""
    return bytes([0, 0, 8, a.ndim]) + np.asarray(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 28, 28), dtype=np.uint8)
LABELS = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)


# ---------------------------------------------------------------------------------------
# IDX
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_reads_raw_and_gzipped_files_by_their_content_digest(tmp_path: Path, compressed: bool) -> None:
    raw = idx_bytes(IMAGES)
    path = tmp_path / ("images.gz" if compressed else "images")
    path.write_bytes(gzip.compress(raw) if compressed else raw)
    got = datasets.read_idx(path, md5(raw))
    np.testing.assert_array_equal(got, IMAGES)


@pytest.mark.parametrize("compressed", [False, True])
def test_idx_rejects_a_truncated_file(tmp_path: Path, compressed: bool) -> None:
    raw = idx_bytes(IMAGES)
    data = gzip.compress(raw) if compressed else raw
    path = tmp_path / "images"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"truncated.*; fix it") as info:
        datasets.read_idx(path, md5(raw), fix="fix it")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_idx_rejects_a_damaged_gzip_stream(tmp_path: Path) -> None:
    """The first deflate block's header flipped: zlib raises its own error ("invalid block
    type"), not OSError, and that must still be one DataError line."""
    raw = idx_bytes(IMAGES)
    data = bytearray(gzip.compress(raw))
    data[10] ^= 0xFF  # the first byte after the 10-byte gzip header
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"damaged gzip.*; fix it") as info:
        datasets.read_idx(path, md5(raw), fix="fix it")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_idx_rejects_a_wrong_checksum(tmp_path: Path) -> None:
    raw = idx_bytes(LABELS)
    path = tmp_path / "labels"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=r"checksum mismatch.*expected 0{32}"):
        datasets.read_idx(path, "0" * 32)


def test_idx_rejects_a_file_of_another_format(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataError, match="not an IDX file"):
        datasets.read_idx(path, "0" * 32)


# ---------------------------------------------------------------------------------------
# CIFAR-10 pickle and SVHN .mat
# ---------------------------------------------------------------------------------------


def cifar_batch(path: Path, n: int = 4) -> tuple[np.ndarray, list[int], bytes]:
    data = RNG.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in RNG.integers(0, 10, n)]
    raw = pickle.dumps({b"batch_label": b"test", b"labels": labels, b"data": data}, protocol=2)
    path.write_bytes(raw)
    return data, labels, raw


def test_cifar_batch_reads_channel_major_images(tmp_path: Path) -> None:
    data, labels, raw = cifar_batch(tmp_path / "data_batch_1")
    x, y = datasets.read_cifar_batch(tmp_path / "data_batch_1", md5(raw))
    assert x.shape == (4, 3, 32, 32)
    # the 3072 bytes are the red plane, then green, then blue, each 32 rows of 32
    np.testing.assert_array_equal(x[2, 1, 5, 7], data[2, 1024 + 5 * 32 + 7])
    np.testing.assert_array_equal(y, labels)


def test_cifar_batch_rejects_truncation_and_a_wrong_checksum(tmp_path: Path) -> None:
    path = tmp_path / "data_batch_1"
    _, _, raw = cifar_batch(path)
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.read_cifar_batch(path, "0" * 32)
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="checksum mismatch .* bytes.*the file is truncated"):
        datasets.read_cifar_batch(path, md5(raw))
    # a verified file that is not a batch (a pickled list) is named as such
    path.write_bytes(other := pickle.dumps([1, 2, 3]))
    with pytest.raises(DataError, match="not a CIFAR-10 batch"):
        datasets.read_cifar_batch(path, md5(other))


def svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    x = RNG.integers(0, 256, (32, 32, 3, 5), dtype=np.uint8)
    y = np.array([[10], [1], [2], [9], [10]], dtype=np.uint8)  # SVHN writes the digit 0 as 10
    savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_mat_reads_images_and_maps_label_10_to_0(tmp_path: Path) -> None:
    path = tmp_path / "train_32x32.mat"
    x, _ = svhn_mat(path)
    images, labels = datasets.read_svhn_mat(path, md5(path.read_bytes()))
    assert images.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(images[3, 2, 4, 6], x[4, 6, 2, 3])
    np.testing.assert_array_equal(labels, [0, 1, 2, 9, 0])


def test_svhn_mat_rejects_truncation_and_a_wrong_checksum(tmp_path: Path) -> None:
    path = tmp_path / "test_32x32.mat"
    svhn_mat(path)
    raw = path.read_bytes()
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.read_svhn_mat(path, "0" * 32)
    path.write_bytes(raw[: len(raw) - 700])
    with pytest.raises(DataError, match="truncated or not an SVHN"):
        datasets.read_svhn_mat(path, md5(raw))


# ---------------------------------------------------------------------------------------
# A whole data set: its folder, its splits, its absence
# ---------------------------------------------------------------------------------------


@pytest.fixture
def small_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 10-image 'mnist' (8 train, 2 test) in ``tmp_path/mnist``, with the registry's
    digests and validation size swapped for ones that fit it."""
    train_x = RNG.integers(0, 256, (8, 28, 28), dtype=np.uint8)
    train_y = np.arange(8, dtype=np.uint8)
    test_x, test_y = train_x[:2], train_y[:2]
    folder = tmp_path / "mnist"
    folder.mkdir()
    digests = {}
    for name, a in zip(datasets._IDX_FILES, (train_x, train_y, test_x, test_y)):
        raw = idx_bytes(a)
        digests[name] = md5(raw)
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
    small = dataclasses.replace(datasets.DATASETS["mnist"], files=digests, n_val=3)
    monkeypatch.setitem(datasets.DATASETS, "mnist", small)
    return tmp_path


def test_mnist_splits_hold_out_the_first_training_images_and_scale_by_255(small_mnist: Path) -> None:
    splits = datasets.load("mnist", small_mnist)
    x, y = splits["train"]
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [3, 4, 5, 6, 7])
    np.testing.assert_array_equal(splits["val"][1], [0, 1, 2])
    assert len(splits["test"][1]) == 2
    assert 0.0 <= x.min() and x.max() <= 1.0
    raw = datasets.read_idx(
        small_mnist / "mnist" / "train-images-idx3-ubyte.gz", datasets.DATASETS["mnist"].files[datasets._IDX_FILES[0]]
    )
    np.testing.assert_array_equal(x[0, 0] * 255, raw[3])  # exact: k/255·255 rounds back to k in float32


def test_a_dataset_is_absent_incomplete_or_present(small_mnist: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    empty = tmp_path_factory.mktemp("empty")
    assert datasets.locate("mnist", empty).status == "absent"
    assert datasets.locate("mnist", small_mnist).status == "present"
    (small_mnist / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    found = datasets.locate("mnist", small_mnist)
    assert found.status == "incomplete" and found.missing == ("t10k-labels-idx1-ubyte",)
    with pytest.raises(DataError, match=r"incomplete in .*mnist \(missing t10k-labels-idx1-ubyte\); run"):
        datasets.require("mnist", small_mnist)


def test_a_damaged_copy_in_the_data_dir_is_not_masked_by_another_location(small_mnist: Path) -> None:
    path = small_mnist / "mnist" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(DataError, match=str(path)):
        datasets.verify("mnist", small_mnist)


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    assert datasets.data_dir() == datasets.DEFAULT_DIR.expanduser().resolve()
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "env"))
    assert datasets.data_dir() == tmp_path / "env"
    assert datasets.data_dir(tmp_path / "flag") == tmp_path / "flag"


def test_download_fails_in_one_line_when_offline_and_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download https://.*train-images-idx3-ubyte.gz .*offline") as info:
        datasets.download("mnist", tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "mnist").exists()  # no partial file, not even an empty folder


def test_download_verifies_what_it_fetched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_mnist: Path) -> None:
    """Served from the small data set's own files: what arrives is checksummed."""
    served = small_mnist / "mnist"

    def serve(url, timeout):
        return (served / url.rsplit("/", 1)[1]).open("rb")

    target = tmp_path / "fresh"
    found = datasets.download("mnist", target, opener=serve)
    assert found.status == "present" and found.folder == target / "mnist"
    # a damaged local copy is fetched again (the fix every error message suggests)
    damaged = target / "mnist" / "t10k-images-idx3-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-50])
    assert datasets.download("mnist", target, opener=serve).status == "present"
    # a server sending other bytes is caught by the checksum
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(IMAGES[:1])))
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.download("mnist", tmp_path / "again", opener=serve)


@pytest.fixture
def served_cifar_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small cifar-10-python.tar.gz (the official layout: cifar-10-batches-py/<batch>),
    with the CIFAR-10 entry's digests pointed at it; returns the served folder."""
    staged = tmp_path / "staged" / "cifar-10-batches-py"
    staged.mkdir(parents=True)
    digests = {name: md5(cifar_batch(staged / name, n=2)[2]) for name in datasets.DATASETS["cifar10"].files}
    served = tmp_path / "server"
    served.mkdir()
    archive = served / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staged, arcname="cifar-10-batches-py")
    small = dataclasses.replace(
        datasets.DATASETS["cifar10"], files=digests, n_val=2, archive=(archive.name, md5(archive.read_bytes()))
    )
    monkeypatch.setitem(datasets.DATASETS, "cifar10", small)
    return served


@pytest.mark.parametrize("extraction_filters", [True, False], ids=["python-with-filters", "python-before-3.11.4"])
def test_cifar_download_unpacks_the_verified_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served_cifar_archive: Path, extraction_filters: bool
) -> None:
    if not extraction_filters:
        # Pythons before 3.11.4: no tarfile.data_filter, and extractall takes no filter
        # argument (a TypeError); the download must still work there
        monkeypatch.delattr(tarfile, "data_filter")
        extractall = tarfile.TarFile.extractall

        def extractall_without_filters(self, path=".", members=None, *, numeric_owner=False):
            return extractall(self, path, members, numeric_owner=numeric_owner)

        monkeypatch.setattr(tarfile.TarFile, "extractall", extractall_without_filters)

    def serve(url, timeout):
        return (served_cifar_archive / url.rsplit("/", 1)[1]).open("rb")

    found = datasets.download("cifar10", tmp_path / "data", opener=serve)
    assert found.status == "present" and found.folder == tmp_path / "data" / "cifar-10-batches-py"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cifar-10-batches-py"]  # no archive left


def test_cifar_download_rejects_an_archive_with_another_checksum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served_cifar_archive: Path
) -> None:
    archive = served_cifar_archive / "cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:-10])

    def serve(url, timeout):
        return archive.open("rb")

    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: the downloaded archive's md5") as info:
        datasets.download("cifar10", tmp_path / "data", opener=serve)
    assert "\n" not in str(info.value) and str(tmp_path) not in str(info.value)  # no temporary path
    assert list((tmp_path / "data").iterdir()) == []  # nothing extracted, no empty folder


def test_cifar_download_offline_names_the_data_directory(tmp_path: Path, served_cifar_archive: Path) -> None:
    """The archive is fetched into a temporary folder; the fix must name where the user
    unpacks it by hand (the data directory), not that temporary folder."""

    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(DataError, match=r"offline, download it elsewhere and unpack it into (\S+)$") as info:
        datasets.download("cifar10", tmp_path / "data", opener=offline)
    assert str(info.value).endswith(f"unpack it into {tmp_path / 'data'}")
    assert list((tmp_path / "data").iterdir()) == []


def test_cifar_download_fetches_nothing_when_every_batch_verifies(tmp_path: Path, served_cifar_archive: Path) -> None:
    fetched = []

    def serve(url, timeout):
        fetched.append(url)
        return (served_cifar_archive / url.rsplit("/", 1)[1]).open("rb")

    datasets.download("cifar10", tmp_path / "data", opener=serve)
    found = datasets.download("cifar10", tmp_path / "data", opener=serve)
    assert found.status == "present" and len(fetched) == 1  # the second call found it all intact


def test_cifar_splits_hold_out_the_last_training_images(tmp_path: Path, monkeypatch) -> None:
    """BinaryConnect's convention: the validation images are the last n_val of the
    training batches, in file order (data_batch_1 first)."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    digests, labels = {}, []
    for name in datasets.DATASETS["cifar10"].files:
        _, batch_labels, raw = cifar_batch(folder / name, n=3)
        digests[name] = md5(raw)
        labels += batch_labels if name != "test_batch" else []
    small = dataclasses.replace(datasets.DATASETS["cifar10"], files=digests, n_val=4)
    monkeypatch.setitem(datasets.DATASETS, "cifar10", small)
    splits = datasets.load("cifar10", tmp_path)
    np.testing.assert_array_equal(splits["train"][1], labels[:11])
    np.testing.assert_array_equal(splits["val"][1], labels[11:])
    assert splits["train"][0].shape == (11, 3, 32, 32) and len(splits["test"][1]) == 3


def test_svhn_splits_hold_out_the_last_training_images_with_digit_0_as_label_0(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "svhn"
    folder.mkdir()
    x, _ = svhn_mat(folder / "train_32x32.mat")
    svhn_mat(folder / "test_32x32.mat")
    digests = {f: md5((folder / f).read_bytes()) for f in datasets.DATASETS["svhn"].files}
    monkeypatch.setitem(
        datasets.DATASETS, "svhn", dataclasses.replace(datasets.DATASETS["svhn"], files=digests, n_val=2)
    )
    splits = datasets.load("svhn", tmp_path)
    np.testing.assert_array_equal(splits["train"][1], [0, 1, 2])  # labels 10, 1, 2
    np.testing.assert_array_equal(splits["val"][1], [9, 0])  # the last two: 9, 10
    np.testing.assert_allclose(splits["val"][0][1], x[..., 4].transpose(2, 0, 1) / 255.0, rtol=1e-6)
    assert splits["train"][0].dtype == np.float32 and len(splits["test"][1]) == 5
