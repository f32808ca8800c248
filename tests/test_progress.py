"""Progress bars: in place on a terminal, plain lines in a log file."""

import time

from hfstream import progress


def test_bar_in_a_log_file_writes_lines_not_carriage_returns(capsys, monkeypatch):
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.05)
    with progress.progress_bar(total=30, desc="docs") as bar:
        for _ in range(30):
            bar.update(1)
            time.sleep(0.01)
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    assert "\r" not in err
    lines = err.splitlines()
    assert 2 <= len(lines) <= 12                   # a few timed lines, not one per update
    assert lines[-1].startswith("docs: 100%") and "30/30" in lines[-1]


def test_bar_waits_the_log_interval_between_lines(capsys):
    with progress.progress_bar(total=1000, desc="docs") as bar:
        for _ in range(1000):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= 2 and "1000/1000" in lines[-1]  # 30 s interval: only the start and the end


def test_a_bar_without_updates_writes_no_line_before_the_interval(capsys, monkeypatch):
    # tqdm's monitor thread would force a line every maxinterval (10 s): in a log file, lines come
    # every LOG_INTERVAL_S and no sooner, also while nothing moves (here: 0.6 s against 0.5 s).
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.5)
    with progress.progress_bar(total=10, desc="docs") as bar:
        assert bar.maxinterval >= bar.mininterval == 0.5
        bar.update(1)
        time.sleep(0.6)
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) <= 3 and "2/10" in lines[-1]
