"""A sweep's Optuna journal (grutune.sweep.journal): a journal cut by a kill or a full disk is repaired to its last
whole record and a searcher on it resumes; one damaged earlier stops with one line."""

import pytest
from ray.tune.search import Searcher

from grutune.errors import GrutuneError
from grutune.sweep.journal import repair_journal
from sweeps import finish_all, journal_trials, searcher_at


def test_a_journal_cut_anywhere_in_its_last_record_is_repaired_and_resumes_to_num_samples(tmp_path):
    """Every byte offset of the last record: the journal is cut back to its last whole record (the original kept
    beside it), Optuna reads it, and a searcher on it ends with exactly num_samples finished trials."""
    (tmp_path / "whole").mkdir()
    whole = searcher_at(tmp_path / "whole", target=3)
    for n in range(3):  # three trials, as Tune drives them; the journal's last record is the third one's end
        whole.suggest(f"t{n}")
        whole.on_trial_result(f"t{n}", {"epoch": 1, "val_accuracy": 0.1 * n})
        whole.on_trial_complete(f"t{n}", {"epoch": 2, "val_accuracy": 0.1 * n})
    whole.save(str(tmp_path / "finished.json"))  # Tune's snapshot when the sweep ended
    data = (tmp_path / "whole/s.journal").read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1  # the last record: the last trial's tell (COMPLETE)
    assert data.endswith(b"\n") and len(data) - start > 20
    for cut in range(start + 1, len(data)):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / "s.journal").write_bytes(data[:cut])
        backup = repair_journal(d / "s.journal")
        assert backup is not None and backup.read_bytes() == data[:cut], cut
        assert (d / "s.journal").read_bytes() == data[:start], cut
        trials = journal_trials(d)
        assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "RUNNING"], cut
        # Tune's snapshot says the cut trial finished: restored, the searcher tells Optuna again what the journal
        # holds of it, and asks for nothing more.
        restored = searcher_at(d, target=3)
        restored.restore(str(tmp_path / "finished.json"))
        assert restored.suggest("t3") == Searcher.FINISHED
        assert [(t.state.name, t.value) for t in journal_trials(d)] == [
            (t.state.name, t.value) for t in journal_trials(tmp_path / "whole")
        ], cut
        # A trial Tune never recorded as finished (a new experiment on the study) is handed out again, and no more.
        (d / "s.journal").write_bytes(data[:start])
        assert finish_all(searcher_at(d, target=3, segment="tune-2", known={"t0", "t1", "t2"})) == 1
        assert [t.state.name for t in journal_trials(d)] == ["COMPLETE"] * 3, cut
    assert repair_journal(tmp_path / "whole/s.journal") is None  # a whole journal is left alone


def test_a_journal_damaged_before_its_last_record_stops_with_one_line(tmp_path):
    (tmp_path / "whole").mkdir()
    finish_all(searcher_at(tmp_path / "whole", target=2))
    lines = (tmp_path / "whole/s.journal").read_bytes().split(b"\n")
    lines[1] = lines[1][:5]
    (tmp_path / "s.journal").write_bytes(b"\n".join(lines))
    with pytest.raises(GrutuneError, match=r"s.journal: record 2 of \d+ is damaged.*restore the file from a backup"):
        repair_journal(tmp_path / "s.journal")
