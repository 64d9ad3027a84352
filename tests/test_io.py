from pathlib import Path

import pytest

from grutune.io import atomic_path, workspace_root


@pytest.mark.parametrize(
    "cwd, root",
    [
        ("/home/u/proj", "/home/u/proj"),
        ("/home/u/proj/.dvc/tmp/exps/tmpk3j2x1", "/home/u/proj"),  # dvc exp run --temp / --queue
        ("/home/u/proj/.dvc/tmp/exps/tmpk3j2x1/sub", "/home/u/proj"),
        # a project that itself sits in another repo's temp copy: its own parent repo, the innermost one
        ("/a/.dvc/tmp/exps/tmp1/b/.dvc/tmp/exps/tmp2", "/a/.dvc/tmp/exps/tmp1/b"),
        ("/home/u/.dvc/tmp", "/home/u/.dvc/tmp"),  # not an experiment's copy
    ],
)
def test_workspace_root_sees_through_dvc_experiment_temp_copies(cwd, root):
    assert workspace_root(cwd) == Path(root)


def test_atomic_path_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.json"]
