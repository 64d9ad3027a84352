"""Where a sweep is kept: its folder `<storage>/<sweep id>/` (a shared path or a cloud URI), its Tune experiments
("segments": tune-1, tune-2, ...), its `sweep.json`, and, with cloud storage, the copy of its local journal there.

With a path, the folder holds the Optuna journal and `sweep.json` too. With a cloud URI they are kept in
`<state_dir>/<sweep id>/` on the driver's node, and the journal is copied up after every finished trial
(`JournalSync`). Nothing saved names an absolute path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from grutune.errors import GrutuneError
from grutune.io import is_uri, not_a_directory, workspace_root, write_json
from grutune.sweep.binding import bound
from grutune.sweep.journal import JOURNAL

__all__ = [
    "SEGMENT_PREFIX",
    "STATE",
    "JournalSync",
    "SweepPlace",
    "move",
    "place",
    "read_state",
    "segments",
    "write_state",
]

SEGMENT_PREFIX = "tune-"  # a sweep's Tune experiments: tune-1, tune-2, ...
STATE = "sweep.json"  # what the last run was asked for, and what the sweep is (see `write_state`)


@dataclass(frozen=True)
class SweepPlace:
    """Where one sweep's files are."""

    uri: str  # the sweep's folder: <storage>/<sweep id>
    local_dir: Path  # its journal and sweep.json on this node (the folder itself, for a path storage)
    journal_uri: str | None  # with cloud storage, where the journal is copied up to

    @property
    def journal(self) -> Path:
        return self.local_dir / JOURNAL


def place(sweep_id: str, storage: str | None, key: str, state_dir: Path) -> SweepPlace:
    """The folder of sweep `sweep_id` under `storage` (the params key `key`; None: `state_dir`), created; a relative
    path is the DVC workspace's, also in a queued experiment's temporary copy."""
    storage = storage or str(Path(state_dir).resolve())
    if not is_uri(storage):
        storage = str((workspace_root() / storage).resolve())
        if (file := not_a_directory(storage)) is not None:  # state_dir; params are checked when they are read
            raise GrutuneError(f"{key}: {storage} cannot hold sweeps: {file} is a file, not a directory")
    uri = f"{storage.rstrip('/')}/{sweep_id}"
    if not is_uri(storage) and (
        Path(f"{uri}.optuna.journal").exists() or any(Path(uri).glob("experiment_state-*.json"))
    ):
        raise GrutuneError(
            f"sweep {sweep_id} in {storage} was saved by an earlier grutune, whose state rested on Ray's and "
            f"Optuna's private internals; this version cannot resume it. Finish it with the earlier "
            f"grutune, or move {uri} and {uri}.optuna.journal away to start it again"
        )
    local_dir = Path(uri) if not is_uri(storage) else Path(state_dir).resolve() / sweep_id
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GrutuneError(f"{key}: cannot create the sweep's folder {local_dir}: {e.strerror}") from None
    return SweepPlace(uri, local_dir, f"{uri}/{JOURNAL}" if is_uri(storage) else None)


def segments(sweep_uri: str) -> list[str]:
    """The names of a sweep's Tune experiments, oldest first."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(sweep_uri)
    if fs.get_file_info(root).type == pyarrow.fs.FileType.NotFound:
        return []
    names = [
        Path(f.path).name
        for f in fs.get_file_info(pyarrow.fs.FileSelector(root))
        if f.type == pyarrow.fs.FileType.Directory
    ]
    found = [n for n in names if n.startswith(SEGMENT_PREFIX) and n[len(SEGMENT_PREFIX) :].isdigit()]
    return sorted(found, key=lambda n: int(n[len(SEGMENT_PREFIX) :]))


def move(src: str, dst: str) -> None:
    """Move a file or folder within one storage (a path or a cloud URI)."""
    import pyarrow.fs

    fs, src_path = pyarrow.fs.FileSystem.from_uri(src)
    fs.move(src_path, pyarrow.fs.FileSystem.from_uri(dst)[1])


def read_state(local_dir: Path) -> dict:
    """A sweep's sweep.json ({} where it has none or it cannot be read)."""
    try:
        state = json.loads((local_dir / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(local_dir: Path, state: dict) -> None:
    """sweep.json (format grutune-sweep, version 2): the sweep's id, the id of its settings without its code
    (`settings`), the digest of each module of its trial code (`code`), and what the last run was asked for
    (`num_samples`, `max_concurrent`)."""
    write_json(local_dir / STATE, {"format": "grutune-sweep", "version": 2, **state})


class JournalSync(tune.Callback):
    """Keeps a copy of the local Optuna journal at a cloud URI, so the search history outlives the head node.
    Pickled with the experiment, it holds only the study's name: both places come from `bind`."""

    def __init__(self, study_name: str):
        self.study_name = study_name

    @property
    def local(self) -> Path:
        return bound(self.study_name).journal

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(bound(self.study_name).journal_uri)

    def download(self) -> None:
        import pyarrow.fs

        fs, path = self._fs()
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            self.local.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(
                path, str(self.local), source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem()
            )

    def upload(self) -> None:
        import pyarrow.fs

        if self.local.exists():
            fs, path = self._fs()
            pyarrow.fs.copy_files(
                str(self.local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs
            )

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.upload()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.upload()

    def on_experiment_end(self, trials, **info):
        self.upload()
