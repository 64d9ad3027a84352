"""Where a sweep is kept: its folder `<storage>/<sweep id>/` (a shared path or a cloud URI), its Tune experiments
("segments": tune-1, tune-2, ...), its `sweep.json`, and, with cloud storage, the copy of its local journal there.

With a path, the folder holds the Optuna journal and `sweep.json` too; on a Ray cluster every node must see it
(`grutune.cluster.require_shared_storage`, checked when the folder is placed). With a cloud URI they are kept in
`<state_dir>/<sweep id>/` on the driver's node, and the journal is copied up at every snapshot Tune takes of the
experiment, before Tune copies its snapshot up (`JournalSync`): the copy is never older than the snapshot beside it.
The journal only grows, so of the local journal and its copy the longer is the newer, and a resume keeps it.
Nothing saved names an absolute path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from grutune.cluster import require_shared_storage
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
    path is the DVC workspace's, also in a queued experiment's temporary copy. On a Ray cluster, a folder on this
    node's disk that the other nodes do not reach is refused, naming `key` (`require_shared_storage`)."""
    given = storage
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
    if (folder := _local_folder(uri)) is not None:
        require_shared_storage(folder, key, given)
    return SweepPlace(uri, local_dir, f"{uri}/{JOURNAL}" if is_uri(storage) else None)


def _local_folder(uri: str) -> Path | None:
    """The folder on this node that a sweep's `uri` names (a path, or a file:// URI); None for a cloud."""
    if not is_uri(uri):
        return Path(uri)
    return Path(uri.removeprefix("file://")) if uri.startswith("file://") else None


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


def _whole(journal: bytes) -> bytes:
    """A journal's whole records: all up to its last newline (a kill or a full disk may have cut the last one)."""
    return journal[: journal.rfind(b"\n") + 1]


class JournalSync(tune.Callback):
    """Keeps a copy of the local Optuna journal at a cloud URI, so the search history outlives the head node.

    The copy is written at every snapshot Tune takes of the experiment (Tune asks each callback for its state,
    `get_state`, just before it copies the snapshot up), after every finished or errored trial and at the
    experiment's end: the copy is never older than Tune's snapshot in the same storage, which is what the recovery
    protocol relies on (grutune.sweep.recovery). Optuna only appends to a journal, so of two copies the longer is
    the newer: `download` keeps the local journal where it holds all that the remote one holds, and stops where
    each holds records the other lacks. Pickled with the experiment, it holds only the study's name: both places
    come from `bind`."""

    def __init__(self, study_name: str):
        self.study_name = study_name
        self._sent: tuple[int, int] | None = None  # (size, mtime) of the local journal last copied up, here

    def __getstate__(self) -> dict:
        return {"study_name": self.study_name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["study_name"])

    @property
    def local(self) -> Path:
        return bound(self.study_name).journal

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(bound(self.study_name).journal_uri)

    def _remote(self) -> bytes | None:
        import pyarrow.fs

        fs, path = self._fs()
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(path) as f:
            return f.readall()

    def download(self) -> None:
        """Bring the newer journal here: the remote copy where there is no local journal or the local one holds
        fewer whole records, of which the copy holds them all. A local journal that holds all the copy does stays
        (the next snapshot copies it up). Where each holds whole records the other lacks, the sweep went on in two
        places since they parted: that is an error, not a guess."""
        remote = self._remote()
        if remote is None:
            return
        local = self.local.read_bytes() if self.local.is_file() else None
        if local is not None and _whole(remote) == _whole(local):
            return
        if local is None or (len(_whole(remote)) > len(_whole(local)) and _whole(remote).startswith(_whole(local))):
            self.local.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.local.with_name(f".{self.local.name}.download")
            tmp.write_bytes(remote)
            os.replace(tmp, self.local)
            return
        if _whole(local).startswith(_whole(remote)):
            return
        records = os.path.commonprefix([_whole(local), _whole(remote)]).count(b"\n")
        raise GrutuneError(
            f"sweep {self.study_name}: its journal here ({self.local}) and its copy at "
            f"{bound(self.study_name).journal_uri} part after record {records}, and each holds records the "
            f"other lacks: the sweep went on in two places. Keep the one to go on with and move the other away, then "
            f"run the stage again"
        )

    def upload(self) -> None:
        """Copy the local journal up, where it changed since it was last copied up from this process."""
        import pyarrow.fs

        if not self.local.is_file():
            return
        stat = self.local.stat()
        if (stat.st_size, stat.st_mtime_ns) == self._sent:
            return
        data = self.local.read_bytes()
        fs, path = self._fs()
        if isinstance(fs, pyarrow.fs.LocalFileSystem):
            fs.create_dir(str(Path(path).parent), recursive=True)
        with fs.open_output_stream(path) as f:
            f.write(data)
        self._sent = (stat.st_size, stat.st_mtime_ns)

    def get_state(self) -> None:
        self.upload()  # Tune is taking a snapshot of the experiment: the journal goes up first
        return None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.upload()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.upload()

    def on_experiment_end(self, trials, **info):
        self.upload()
