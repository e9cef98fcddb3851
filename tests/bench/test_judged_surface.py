"""The five judge-scored benchmark modules share one surface, and, when MMALIGN_BENCH_DATA points at a folder
holding the real files, their loaders accept those files with the hash checks of benchmarks.md §12 on."""
import os
from pathlib import Path

import pytest

from mmalign_utils.bench import alpacaeval, llavabench, mmhal, mmvet, mtbench
from mmalign_utils.bench.common import DataFile

MODULES = [mtbench, alpacaeval, mmvet, llavabench, mmhal]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.NAME)
def test_common_surface(module):
    assert isinstance(module.NAME, str) and module.DEFAULT_PROTOCOL in module.PROTOCOLS
    assert module.REQUIRED_FILES and all(isinstance(f, DataFile) for f in module.REQUIRED_FILES)
    for function in ("load", "build_model_prompts", "read_answers", "write_answers", "score", "score_file"):
        assert callable(getattr(module, function)), f"{module.NAME} lacks {function}"
    with pytest.raises(ValueError, match="unknown protocol"):
        module.build_model_prompts([], protocol="no-such-protocol")


def test_missing_files_name_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="judge_prompts.jsonl|question.jsonl"):
        mtbench.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="mm-vet.json"):
        mmvet.load(tmp_path)


REAL_DATA = os.environ.get("MMALIGN_BENCH_DATA")
# Expected sizes from benchmarks.md: MT-Bench 80 questions, AlpacaEval 805, MM-Vet 218, LLaVA-Bench 60, MMHal 96.
REAL_CASES = [
    (mtbench, "mt_bench", 80, lambda d: mtbench.load_judge_prompts(d)),
    (alpacaeval, "alpaca_eval", 805, lambda d: alpacaeval.load_annotator_prompt(d)),
    (mmvet, "mm-vet", 218, lambda d: mmvet.load_grader_prompt(d)),
    (llavabench, "llava-bench-in-the-wild", 60, lambda d: llavabench.load_rules(d)),
    (mmhal, "mmhal", 96, lambda d: mmhal.load_grader_template(d)),
]


@pytest.mark.skipif(not REAL_DATA, reason="set MMALIGN_BENCH_DATA to a folder with the real benchmark files")
@pytest.mark.parametrize("module, folder, size, load_prompt", REAL_CASES, ids=[c[1] for c in REAL_CASES])
def test_real_files_pass_the_hash_checks(module, folder, size, load_prompt):
    if not (Path(REAL_DATA) / folder).is_dir():
        pytest.skip(f"{folder}/ not under {REAL_DATA}")
    items = module.load(REAL_DATA, verify_hash=True)
    assert len(items) == size
    assert load_prompt(REAL_DATA)
    if module is mtbench:
        assert sum(item["reference"] is not None for item in items) == 30
