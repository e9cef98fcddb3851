"""Command-line entry point: `mmalign` (also `python -m mmalign_utils`).

    mmalign run 01 -p smoke true -p seed 1      # one notebook, headless, through papermill
    mmalign reproduce --smoke                    # the whole series in order
    mmalign list                                 # the notebooks of the series
    mmalign score pope --answers answers.jsonl --data-dir data/   # rescore answers made by any tool
    mmalign sweep 05 --grid beta 0.05 0.1 0.5 --grid seed 0 1 2    # one run per combination, own folder each
    mmalign publish --artifacts-dir artifacts --out docs/results  # notebook 07's tables and figures, for the README
    mmalign pack-toy --artifacts-dir artifacts --out packs/toy_llava  # a finished toy LLaVA as its trained parts
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO_ROOT / "notebooks"
COMMON_PARAMETERS = ("profile", "smoke", "seed", "artifacts_dir")


def series() -> list[Path]:
    """The numbered notebooks, in order."""
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def resolve_notebook(name: str) -> Path:
    """Accept '01', '01_degradation_analysis', a file name or a path."""
    p = Path(name)
    if p.suffix == ".ipynb" and p.exists():
        return p.resolve()
    for nb in series():
        if nb.stem == name or nb.name == name or nb.stem.split("_", 1)[0] == name.zfill(2):
            return nb
    known = ", ".join(nb.stem for nb in series()) or "(none)"
    raise SystemExit(f"mmalign: no notebook {name!r}; known notebooks: {known}")


def parse_value(text: str):
    """papermill -p values arrive as strings: read booleans, numbers and None like a person would."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


class _CurrentStdoutHandler(logging.StreamHandler):
    """Writes to whatever sys.stdout is at emit time, not the stream bound when the handler was made: a second run
    in the same process (a test runner swaps stdout per test) would otherwise write to a stale stream."""

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):
        pass


def _show_papermill_log() -> None:
    """papermill's log_output goes to the "papermill" logger at INFO, which Python drops unless a handler is set:
    without this a headless run shows nothing of the cells' output (prints, progress) until the notebook ends."""
    log = logging.getLogger("papermill")
    if not any(isinstance(h, _CurrentStdoutHandler) for h in log.handlers):
        handler = _CurrentStdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def run_notebook(notebook: Path, parameters: dict, artifacts_dir: Path, kernel: str | None = None) -> Path:
    """Execute one notebook headless; the executed copy goes to {artifacts_dir}/notebooks/."""
    import papermill as pm

    out_dir = Path(artifacts_dir) / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / notebook.name
    params = dict(parameters)
    params["artifacts_dir"] = str(Path(artifacts_dir).resolve())
    start = time.time()
    print(f"[mmalign] running {notebook.name} with {params}", flush=True)
    # The kernel inherits this: long loops print plain progress lines that reach this log (see progress.py).
    os.environ.setdefault("MMALIGN_PLAIN_PROGRESS", "1")
    _show_papermill_log()
    # The kernel runs where mmalign was started, so a relative path given with -p (model_path, data files)
    # means what the user typed; in the notebooks' own folder `-p model_path artifacts/...` missed and reached
    # the hub as a repo id. The notebooks themselves use no relative paths.
    pm.execute_notebook(
        str(notebook), str(output), parameters=params, kernel_name=kernel or "python3",
        cwd=os.getcwd(), progress_bar=False, log_output=True,
    )
    print(f"[mmalign] {notebook.name} done in {time.time() - start:.0f} s -> {output}", flush=True)
    return output


def _params_from_args(args) -> dict:
    params = {name: parse_value(value) for name, value in (args.param or [])}
    if "artifacts_dir" in params:
        # run_notebook sets it from --artifacts-dir; taking -p silently would write into the default folder
        raise SystemExit(f"-p artifacts_dir {params['artifacts_dir']}: give the output folder as "
                         f"--artifacts-dir {params['artifacts_dir']} instead (the CLI sets that parameter)")
    if getattr(args, "profile", None):
        params["profile"] = args.profile
    if getattr(args, "smoke", False):
        params["smoke"] = True
    if getattr(args, "seed", None) is not None:
        params["seed"] = args.seed
    return params


def cmd_run(args) -> int:
    nb = resolve_notebook(args.notebook)
    artifacts = Path(args.artifacts_dir)
    run_notebook(nb, _params_from_args(args), artifacts, args.kernel)
    return 0


def cmd_reproduce(args) -> int:
    artifacts = Path(args.artifacts_dir)
    notebooks = series()
    if args.only:
        wanted = {resolve_notebook(n) for n in args.only}
        notebooks = [nb for nb in notebooks if nb in wanted]
    if not notebooks:
        print("mmalign: no notebooks found under", NOTEBOOK_DIR, file=sys.stderr)
        return 1
    start = time.time()
    for nb in notebooks:
        run_notebook(nb, _params_from_args(args), artifacts, args.kernel)
    print(f"[mmalign] series done in {time.time() - start:.0f} s; results in {artifacts / 'results.csv'}")
    return 0


BENCHMARK_MODULES = {
    "mtbench": "mtbench", "mt-bench": "mtbench", "alpacaeval": "alpacaeval", "mmvet": "mmvet", "mm-vet": "mmvet",
    "llavabench": "llavabench", "llava-bench": "llavabench", "pope": "pope", "mmbench": "mmbench",
    "amber": "amber", "mmhal": "mmhal", "mmhal-bench": "mmhal", "objhal": "objhal", "object-halbench": "objhal",
}


def cmd_score(args) -> int:
    import importlib
    import json

    from mmalign_utils.results import ResultRow, append_results

    key = args.benchmark.lower()
    if key not in BENCHMARK_MODULES:
        raise SystemExit(f"mmalign: unknown benchmark {args.benchmark!r}; choose one of {sorted(set(BENCHMARK_MODULES))}")
    module = importlib.import_module(f"mmalign_utils.bench.{BENCHMARK_MODULES[key]}")
    judge = None
    if args.judge:
        from mmalign_utils.judges.factory import make_judge

        judge = make_judge(args.judge, cache_path=Path(args.artifacts_dir) / "judge_cache.sqlite")
    kwargs = {name: parse_value(value) for name, value in (args.option or [])}
    if args.annotations:
        kwargs["annotations"] = args.annotations
    protocol = args.protocol or module.DEFAULT_PROTOCOL
    scores = module.score_file(args.answers, args.data_dir, protocol=protocol, judge=judge, **kwargs)
    text = json.dumps(scores, indent=2, default=str)
    print(text)
    out = Path(args.out) if args.out else Path(args.artifacts_dir) / "scores" / f"{module.NAME}-{Path(args.answers).stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    rows = [ResultRow(notebook="cli", model=args.model or Path(args.answers).stem, benchmark=module.NAME, split="all",
                      metric=name, value=float(value), n=int(scores.get("n", 0) or 0), profile="external",
                      protocol=protocol, judge=getattr(judge, "judge_id", "") if judge else "")
            for name, value in scores.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name != "n"]
    append_results(Path(args.artifacts_dir) / "results.csv", rows)
    print(f"[mmalign] saved {out}; {len(rows)} rows appended to {Path(args.artifacts_dir) / 'results.csv'}",
          file=sys.stderr)
    return 0


def sweep_runs(grid: list[list[str]]) -> list[dict]:
    """All combinations of a grid given as [[name, v1, v2, ...], ...], values parsed like -p values."""
    import itertools

    names = [g[0] for g in grid]
    values = [[parse_value(v) for v in g[1:]] for g in grid]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def sweep_folder(params: dict) -> str:
    """Folder name of one sweep run, e.g. 'beta=0.1,seed=2'."""
    return ",".join(f"{k}={v}" for k, v in params.items())


def cmd_sweep(args) -> int:
    """Run notebooks once per grid combination, each in {artifacts}/sweeps/<name=value,...>/; notebook 07 collects
    every results.csv below the artifacts directory. A run reads the inputs it lacks (the toy LLaVA, notebook
    02's datasets) from the artifacts directory itself (RunContext.input_dirs)."""
    from mmalign_utils.config import SWEEPS_FOLDER

    notebooks = [resolve_notebook(n) for n in args.notebooks]
    base = _params_from_args(args)
    runs = sweep_runs(args.grid or [])
    root = Path(args.artifacts_dir) / SWEEPS_FOLDER  # RunContext.input_dirs reads the root's inputs from there
    for i, params in enumerate(runs, 1):
        out = root / sweep_folder(params)
        print(f"[mmalign] sweep run {i}/{len(runs)}: {params} -> {out}", flush=True)
        for nb in notebooks:
            run_notebook(nb, {**base, **params}, out, args.kernel)
    return 0


def cmd_build_toy(args) -> int:
    """Build the toy LLaVA (what notebook 01 does first when it is absent), or resume a half-finished build from
    its checkpoints; prints the held-out VQA result."""
    from mmalign_utils.config import RunContext
    from mmalign_utils.train.vit import ensure_toy_llava

    ctx = RunContext(profile="toy", smoke=args.smoke, seed=args.seed or 0, artifacts_dir=Path(args.artifacts_dir))
    model_path, report = ensure_toy_llava(ctx, rebuild=args.rebuild)
    vqa = report["vqa"]
    print(f"[mmalign] toy LLaVA at {model_path}: held-out ShapesWorld VQA {vqa['accuracy_shapes']:.3f} "
          f"(chance {vqa['chance_shapes']:.3f}, with another scene's image "
          f"{vqa.get('accuracy_shapes_other_image', float('nan')):.3f})")
    return 0


def cmd_pack_toy(args) -> int:
    """Pack the finished toy LLaVA build of an artifacts folder as its trained parts (train/toy_pack.py)."""
    from mmalign_utils.config import RunContext
    from mmalign_utils.train.toy_pack import pack_toy_llava
    from mmalign_utils.train.vit import toy_llava_dir

    ctx = RunContext(profile="toy", smoke=args.smoke, seed=args.seed or 0, artifacts_dir=Path(args.artifacts_dir))
    try:
        pack = pack_toy_llava(toy_llava_dir(ctx), args.out)
    except (FileNotFoundError, RuntimeError) as error:
        print(f"mmalign pack-toy: {error}", file=sys.stderr)
        return 1
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file()) / 2**20
    print(f"[mmalign] packed {pack['packed_from']} into {args.out} ({size:.1f} MB; {len(pack['tensor_sha256'])} "
          "tensors checked by unpacking)")
    return 0


def cmd_publish(args) -> int:
    """Copy notebook 07's tables and the main figures into a folder the README links (report.publish_results)."""
    import subprocess

    from mmalign_utils.report import publish_results

    try:
        commit = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the page says nothing about a commit
        commit = None
    try:
        page = publish_results(args.artifacts_dir, args.out, commit)
    except FileNotFoundError as error:
        print(f"mmalign publish: {error}", file=sys.stderr)
        return 1
    print(f"[mmalign] results page written: {page}")
    return 0


def cmd_list(args) -> int:
    for nb in series():
        print(nb.stem)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mmalign", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_common(p):
        p.add_argument("-p", "--param", nargs=2, action="append", metavar=("NAME", "VALUE"),
                       help="a papermill parameter (repeatable)")
        p.add_argument("--profile", choices=["toy", "paper"], help="shortcut for -p profile ...")
        p.add_argument("--smoke", action="store_true", help="tiny sizes (what CI runs)")
        p.add_argument("--seed", type=int, help="shortcut for -p seed ...")
        p.add_argument("--artifacts-dir", default="artifacts", help="where everything is written (default: artifacts)")
        p.add_argument("--kernel", default=None, help="Jupyter kernel name (default: python3)")

    p_run = sub.add_parser("run", help="execute one notebook headless with papermill")
    p_run.add_argument("notebook", help="'01', a notebook stem, or a path")
    add_common(p_run)
    p_run.set_defaults(func=cmd_run)

    p_rep = sub.add_parser("reproduce", help="execute the notebook series in order")
    p_rep.add_argument("--only", nargs="+", help="run only these notebooks (in series order)")
    add_common(p_rep)
    p_rep.set_defaults(func=cmd_reproduce)

    p_score = sub.add_parser("score", help="score an answer file written by any tool; prints JSON metrics")
    p_score.add_argument("benchmark", help="pope, mmbench, mmvet, llavabench, mtbench, alpacaeval, amber, mmhal, objhal")
    p_score.add_argument("--answers", required=True, help="the answer file in the benchmark's usual format")
    p_score.add_argument("--data-dir", default="data", help="where the benchmark's official files are")
    p_score.add_argument("--protocol", help="scoring protocol (default: the paper's)")
    p_score.add_argument("--judge", help="judge spec, e.g. gemini:gemini-2.5-flash or openai:gpt-4o-mini")
    p_score.add_argument("--annotations", help="AlpacaEval: an annotations json to score instead of judging")
    p_score.add_argument("-o", "--option", nargs=2, action="append", metavar=("NAME", "VALUE"),
                         help="extra keyword for the benchmark's score_file, e.g. -o verify_hash false, "
                              "-o allow_missing true, -o question_file FILE, -o n_runs 3 (repeatable)")
    p_score.add_argument("--model", help="model name for results.csv (default: the answer file's name)")
    p_score.add_argument("--out", help="where to save the JSON (default: {artifacts}/scores/)")
    p_score.add_argument("--artifacts-dir", default="artifacts")
    p_score.set_defaults(func=cmd_score)

    p_sweep = sub.add_parser("sweep", help="run notebooks over a parameter grid, one output folder per run")
    p_sweep.add_argument("notebooks", nargs="+", help="notebooks to run for each combination, in order")
    p_sweep.add_argument("--grid", nargs="+", action="append", metavar="NAME VALUE",
                         help="a parameter and its values, e.g. --grid beta 0.05 0.1 (repeatable)")
    add_common(p_sweep)
    p_sweep.set_defaults(func=cmd_sweep)

    p_build = sub.add_parser("build-toy", help="build the toy LLaVA, or resume a half-finished build")
    p_build.add_argument("--smoke", action="store_true", help="tiny sizes (what CI runs)")
    p_build.add_argument("--seed", type=int, help="seed of the build (default 0)")
    p_build.add_argument("--artifacts-dir", default="artifacts", help="where the build is kept (default: artifacts)")
    p_build.add_argument("--rebuild", action="store_true", help="build again even if a finished build is there")
    p_build.set_defaults(func=cmd_build_toy)

    p_pack = sub.add_parser("pack-toy", help="pack a finished toy LLaVA build as its trained parts (packs/)")
    p_pack.add_argument("--smoke", action="store_true", help="the smoke build")
    p_pack.add_argument("--seed", type=int, help="seed of the build (default 0)")
    p_pack.add_argument("--artifacts-dir", default="artifacts", help="where the build is (default: artifacts)")
    p_pack.add_argument("--out", default="packs/toy_llava", help="the pack's folder (default: packs/toy_llava)")
    p_pack.set_defaults(func=cmd_pack_toy)

    p_pub = sub.add_parser("publish", help="copy notebook 07's tables and figures into a folder for the README")
    p_pub.add_argument("--artifacts-dir", default="artifacts", help="the series' artifacts (default: artifacts)")
    p_pub.add_argument("--out", default="docs/results", help="where RESULTS.md and figures/ go (default: docs/results)")
    p_pub.set_defaults(func=cmd_publish)

    p_list = sub.add_parser("list", help="list the notebooks of the series")
    p_list.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
