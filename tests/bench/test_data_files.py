"""Real benchmark data: every file checked against its SHA-256, one error that lists all that is wrong."""
import hashlib

import pytest

from mmalign_utils.bench import amber, pope
from mmalign_utils.bench.common import BenchmarkDataError, DataFile, check_files


def test_one_error_lists_every_missing_and_changed_file_with_its_source(tmp_path):
    good = b'{"question_id": 1}\n'
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "good.json").write_bytes(good)
    (tmp_path / "x" / "edited.json").write_bytes(b"edited by hand\n")
    files = [
        DataFile("x/good.json", "repo-a/good.json", hashlib.sha256(good).hexdigest()),
        DataFile("x/edited.json", "repo-b/edited.json", hashlib.sha256(b"the original\n").hexdigest()),
        DataFile("x/absent.json", "repo-c/absent.json", None),
    ]
    with pytest.raises(BenchmarkDataError) as err:
        check_files("demo", tmp_path, files)
    text = str(err.value)
    assert "Nothing is downloaded" in text
    assert "missing" in text and str(tmp_path / "x" / "absent.json") in text and "repo-c/absent.json" in text
    assert "changed" in text and hashlib.sha256(b"edited by hand\n").hexdigest() in text and "repo-b" in text
    assert "good.json" not in text  # the file that matches is not reported
    # Accepting a changed file is the user's explicit choice, never a silent fallback.
    (tmp_path / "x" / "absent.json").write_text("{}")
    seen = check_files("demo", tmp_path, files, verify_hash=False)
    assert seen["x/good.json"] == hashlib.sha256(good).hexdigest()


def test_pope_and_amber_pin_the_hashes_of_the_reference_table(tmp_path):
    # benchmarks.md section 12: the LLaVA-pinned POPE files and AMBER's annotations.
    pins = {f.relpath: f.sha256 for f in pope.REQUIRED_FILES + amber.REQUIRED_FILES}
    accepted = {h for f in pope.REQUIRED_FILES for h in (f.sha256, *f.alternatives)}
    assert "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994" in accepted  # HEAD, random
    assert "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35" in accepted  # LLaVA's pin, random
    assert pins["amber/annotations.json"] == "db22a436c4836fbb295e60b4e80d519573077579fb7032f01b193c1bd022b797"
    with pytest.raises(BenchmarkDataError) as err:
        pope.load(tmp_path)
    assert all(f.relpath.split("/")[-1] in str(err.value) for f in pope.REQUIRED_FILES)
