"""Headless runs print plain progress lines to stdout (what the papermill log shows); interactive runs use tqdm.auto."""
from mmalign_utils.progress import progress_bar


def test_plain_progress_prints_text_lines_to_stdout(monkeypatch, capsys):
    monkeypatch.setenv("MMALIGN_PLAIN_PROGRESS", "1")
    monkeypatch.setenv("MMALIGN_PROGRESS_INTERVAL", "0")
    for _ in progress_bar(range(3), desc="stage 2"):
        pass
    out = capsys.readouterr().out
    assert "stage 2" in out and "3/3" in out


def test_interactive_progress_leaves_stdout_alone(monkeypatch, capsys):
    monkeypatch.delenv("MMALIGN_PLAIN_PROGRESS", raising=False)
    for _ in progress_bar(range(3), desc="stage 2"):
        pass
    assert "stage 2" not in capsys.readouterr().out  # tqdm's terminal bar goes to stderr


def test_plain_progress_postfix_updates_do_not_print_a_line_each(monkeypatch, capsys):
    # Training loops call set_postfix every step; in a log that must not become one line per step.
    monkeypatch.setenv("MMALIGN_PLAIN_PROGRESS", "1")
    monkeypatch.setenv("MMALIGN_PROGRESS_INTERVAL", "3600")
    bar = progress_bar(range(50), desc="stage 2")
    for step in bar:
        bar.set_postfix(loss=f"{step:.3f}")
    out = capsys.readouterr().out
    assert out.count("stage 2") <= 3  # the first draw and the final one (tqdm may redraw once on close)
    assert "50/50" in out
