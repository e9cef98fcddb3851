"""Folder fingerprints behind the caches and checkpoint resume (mmalign_utils.stamps)."""
import os

import datasets

from mmalign_utils.stamps import DATASET_FILES, folder_stamp, is_saved_dataset, sha256_file, weights_digest


def test_folder_stamp_changes_when_a_matching_file_is_rewritten(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "notes.txt").write_text("x")
    first = folder_stamp(tmp_path)
    assert first.startswith("model.safetensors:3:")
    assert "notes.txt" not in first
    os.utime(tmp_path / "notes.txt", ns=(1, 1))  # a file outside the patterns does not count
    assert folder_stamp(tmp_path) == first
    stat = (tmp_path / "model.safetensors").stat()
    os.utime(tmp_path / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))
    assert folder_stamp(tmp_path) != first
    assert folder_stamp(tmp_path / "model.safetensors").startswith("model.safetensors:3:")  # a file stamps itself


def test_folder_stamp_of_a_hub_id_or_spec_is_the_name(tmp_path):
    assert folder_stamp("llava-hf/llava-1.5-7b-hf") == "llava-hf/llava-1.5-7b-hf"
    assert folder_stamp(tmp_path / "missing", DATASET_FILES) == str(tmp_path / "missing")


def test_weights_digest_follows_content_not_times(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    digest = weights_digest(tmp_path)
    os.utime(tmp_path / "model.safetensors", ns=(5, 5))
    assert weights_digest(tmp_path) == digest
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert weights_digest(tmp_path) != digest
    assert weights_digest(tmp_path / "nothing") == str(tmp_path / "nothing")


def test_is_saved_dataset_knows_save_to_disk_folders(tmp_path):
    datasets.Dataset.from_dict({"a": [1, 2]}).save_to_disk(tmp_path / "one")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"a": [1]})}).save_to_disk(tmp_path / "two")
    (tmp_path / "empty").mkdir()
    assert is_saved_dataset(tmp_path / "one")
    assert not is_saved_dataset(tmp_path / "two")  # a DatasetDict: training loads single Datasets only
    assert not is_saved_dataset(tmp_path / "empty")
    assert not is_saved_dataset(tmp_path / "absent")


def test_sha256_file_matches_the_fips_test_vector_across_block_sizes(tmp_path):
    # FIPS 180-2 example: SHA-256("abc").
    path = tmp_path / "abc.bin"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=2) == expected  # a block boundary inside the content changes nothing
