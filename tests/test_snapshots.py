"""The content-addressed snapshot store: round trips, dedup, size policy, corruption, refusals."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nbmlops.data.fingerprint import fingerprint
from nbmlops.data.snapshots import (
    CorruptSnapshotError,
    SnapshotError,
    SnapshotNotFoundError,
    SnapshotStore,
    StaleFingerprintError,
    UnsupportedSnapshotError,
)
from nbmlops.exceptions import NbmlopsError


def mixed_frame(n: int = 40) -> pd.DataFrame:
    i = np.arange(n)
    return pd.DataFrame(
        {
            "int": i,
            "float": np.where(i % 7 == 0, np.nan, i * 0.5),
            "bool": i % 2 == 0,
            "text": [f"row {k}" for k in i],
            "when": pd.date_range("2024-03-30", periods=n, freq="h", tz="Europe/Paris"),
            "cat": pd.Categorical(["b", "a"] * (n // 2), categories=["b", "a"], ordered=True),
            "nullable": pd.array([1, None] * (n // 2), dtype="Int64"),
        },
        index=pd.Index(i * 3, name="key"),
    ).assign(obj=lambda df: pd.Series(["x", None] * (n // 2), df.index, dtype=object))


def big_frame(rows: int = 50_000) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    return pd.DataFrame({"a": rng.normal(size=rows), "b": rng.integers(0, 1000, rows)})


@pytest.fixture
def store(tmp_path: Path) -> SnapshotStore:
    return SnapshotStore(tmp_path / "data")


def stored_files(store: SnapshotStore) -> list[str]:
    return sorted(p.name for p in store.root.rglob("*") if p.is_file())


@pytest.mark.parametrize(
    "obj",
    [
        mixed_frame(),
        pd.DataFrame({"a": [1, 2]}),  # RangeIndex
        pd.DataFrame({"a": [1.0]}, index=pd.MultiIndex.from_tuples([(1, "x")], names=["n", "m"])),
        pd.DataFrame({"s": pd.array(["a", None], dtype="string[python]")}),
        pd.Series([1.5, np.nan, 3.0], name="price", index=pd.Index(["a", "b", "c"], name="id")),
        pd.Series(["a", None], dtype=object),
        np.arange(12.0).reshape(3, 4),
        np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        np.array(["ab", "c"]),
        np.array(5),
        np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"),
    ],
    ids=lambda o: type(o).__name__,
)
def test_round_trip_keeps_fingerprint(store: SnapshotStore, obj: object) -> None:
    snap = store.save(obj)
    assert snap is not None and snap.fingerprint == fingerprint(obj)
    assert snap.fingerprint in store
    assert snap.path == store.root / snap.fingerprint[:2] / f"{snap.fingerprint}.parquet"
    assert snap.path.with_suffix(".json").is_file()
    back = store.load(snap.fingerprint)
    assert type(back) is type(obj)
    assert fingerprint(back) == snap.fingerprint
    if isinstance(obj, pd.DataFrame):
        pd.testing.assert_frame_equal(back, obj, check_index_type=False)
    elif isinstance(obj, pd.Series):
        pd.testing.assert_series_equal(back, obj)
    else:
        np.testing.assert_array_equal(back, obj)
        assert back.dtype == obj.dtype and back.shape == obj.shape


def test_sidecar_describes_snapshot(store: SnapshotStore) -> None:
    df = mixed_frame()
    assert df["obj"].dtype == object and df["text"].dtype == "str"
    snap = store.save(df)
    assert snap.kind == "DataFrame" and snap.shape == df.shape
    assert snap.bytes == snap.path.stat().st_size
    assert [c["name"] for c in snap.profile["columns"]] == list(df.columns)
    assert store.info(snap.fingerprint) == snap


def test_equal_data_is_written_once(store: SnapshotStore) -> None:
    first = store.save(mixed_frame())
    mtime = first.path.stat().st_mtime_ns
    second = store.save(mixed_frame())  # an equal copy
    assert second == first
    assert first.path.stat().st_mtime_ns == mtime
    assert stored_files(store) == [f"{first.fingerprint}.json", f"{first.fingerprint}.parquet"]


def test_list_is_newest_first(store: SnapshotStore) -> None:
    snaps = [store.save(pd.DataFrame({"a": [k]})) for k in range(3)]
    listed = store.list()
    assert {s.fingerprint for s in listed} == {s.fingerprint for s in snaps}
    assert [s.created for s in listed] == sorted((s.created for s in listed), reverse=True)


def test_concurrent_savers_leave_one_valid_snapshot(tmp_path: Path) -> None:
    root = tmp_path / "data"
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import time, pathlib, numpy as np, pandas as pd
        from nbmlops.data.snapshots import SnapshotStore
        rng = np.random.default_rng(7)
        df = pd.DataFrame({{"a": rng.normal(size=200_000), "b": rng.integers(0, 1000, 200_000)}})
        while not pathlib.Path({str(go)!r}).exists():
            time.sleep(0.01)
        print(SnapshotStore(pathlib.Path({str(root)!r})).save(df).fingerprint)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outputs[0] == outputs[1]
    store = SnapshotStore(root)
    assert stored_files(store) == [f"{outputs[0]}.json", f"{outputs[0]}.parquet"]
    assert fingerprint(store.load(outputs[0])) == outputs[0]


def test_size_policy_skips_large_objects(store: SnapshotStore) -> None:
    df = big_frame(1000)
    assert store.save(df, max_bytes=1000) is None
    assert fingerprint(df) not in store
    assert not store.root.exists() or stored_files(store) == []
    assert store.save(df, max_bytes=None) is not None


def test_flipped_byte_is_refused(store: SnapshotStore) -> None:
    snap = store.save(big_frame())
    data = bytearray(snap.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snap.path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshotError) as info:
        store.load(snap.fingerprint)
    assert snap.fingerprint in str(info.value) and str(snap.path) in str(info.value)
    assert info.value.fingerprint == snap.fingerprint and info.value.path == snap.path


def test_truncated_file_is_refused(store: SnapshotStore) -> None:
    snap = store.save(big_frame(1000))
    snap.path.write_bytes(snap.path.read_bytes()[:-100])
    with pytest.raises(CorruptSnapshotError, match=snap.fingerprint):
        store.load(snap.fingerprint)


def test_other_data_under_a_fingerprint_is_refused(store: SnapshotStore) -> None:
    a, b = store.save(pd.DataFrame({"a": [1]})), store.save(pd.DataFrame({"a": [2]}))
    a.path.write_bytes(b.path.read_bytes())  # a valid Parquet file, but not this data
    with pytest.raises(CorruptSnapshotError, match=f"fingerprint {b.fingerprint}"):
        store.load(a.fingerprint)


@pytest.mark.parametrize(
    "obj",
    [
        pd.DataFrame({"m": [1, "a", 2.5]}),  # Arrow cannot convert it
        pd.DataFrame({"m": pd.Series(["a", np.nan], dtype=object)}),  # NaN would come back None
        pd.DataFrame({"lists": [[1, 2], [3]]}),  # comes back as arrays
        np.array([1j, 2j]),
    ],
    ids=["mixed", "nan-in-object", "lists", "complex"],
)
def test_unsupported_data_is_refused_cleanly(store: SnapshotStore, obj: object) -> None:
    with pytest.raises(UnsupportedSnapshotError) as info:
        store.save(obj)
    assert isinstance(info.value, NbmlopsError)
    assert info.value.fingerprint == fingerprint(obj) and info.value.reason
    assert stored_files(store) == []


def test_unknown_fingerprint(store: SnapshotStore) -> None:
    for fp in ("0" * 32, "../../etc/passwd", "ABC"):
        assert fp not in store
        with pytest.raises(SnapshotNotFoundError):
            store.load(fp)
    with pytest.raises(LookupError):
        store.info("0" * 32)


def test_get_writes_each_format(store: SnapshotStore, tmp_path: Path) -> None:
    df = mixed_frame()
    fp = store.save(df).fingerprint
    parquet = store.get(fp, tmp_path / "out.parquet")
    assert parquet.read_bytes() == store.path_of(fp).read_bytes()
    assert "row 3" in store.get(fp, tmp_path / "out.csv").read_text()
    arr = np.arange(6.0).reshape(2, 3)
    afp = store.save(arr).fingerprint
    np.testing.assert_array_equal(np.load(store.get(afp, tmp_path / "out.npy")), arr)
    with pytest.raises(UnsupportedSnapshotError):
        store.get(fp, tmp_path / "out.npy")  # object columns need pickle
    with pytest.raises(UnsupportedSnapshotError, match="xlsx"):
        store.get(fp, tmp_path / "out.xlsx")


def test_default_store_is_under_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nbmlops.config import resolve_settings
    from nbmlops.data import snapshots

    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
    monkeypatch.chdir(tmp_path)
    store = SnapshotStore()
    assert store.root == resolve_settings().state_dir / "data"
    fp = store.save(pd.Series([1, 2, 3])).fingerprint
    pd.testing.assert_series_equal(snapshots.load(fp), pd.Series([1, 2, 3]))


def test_a_mutated_object_is_not_stored_under_the_fingerprint_taken_before(store: SnapshotStore) -> None:
    df = pd.DataFrame({"a": [1, 2, 3]})
    before = fingerprint(df)
    df.loc[0, "a"] = 100  # in place, after the fingerprint was taken
    with pytest.raises(StaleFingerprintError) as info:
        store.save(df, digest=before)
    assert info.value.fingerprint == before and info.value.actual == fingerprint(df)
    assert isinstance(info.value, NbmlopsError) and not isinstance(info.value, UnsupportedSnapshotError)
    assert before not in store and stored_files(store) == []
    assert store.save(df, digest=fingerprint(df)) is not None


def test_a_file_is_stored_as_its_bytes_and_written_back(store: SnapshotStore, tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_bytes(b"x,y\n1,2\n" * 1000)
    snap = store.save(source)
    fp = fingerprint(source)
    assert snap is not None and snap.fingerprint == fp and snap.kind == "file" and snap.name == "data.csv"
    assert snap.path == store.root / fp[:2] / f"{fp}.bin" and snap.bytes == source.stat().st_size
    assert store.path_of(fp) == snap.path and fp in store and store.info(fp) == snap
    assert store.load(fp) == source.read_bytes()
    assert store.get(fp, tmp_path / "back.txt").read_bytes() == source.read_bytes()
    assert store.save(str(source)) == snap  # deduplicated
    assert stored_files(store) == [f"{fp}.bin", f"{fp}.json"]
    assert [s.fingerprint for s in store.list()] == [fp]


def test_file_snapshots_follow_the_size_policy_and_refuse_changed_files_and_folders(
    store: SnapshotStore, tmp_path: Path
) -> None:
    source = tmp_path / "data.csv"
    source.write_text("x\n1\n")
    assert store.save(source, max_bytes=3) is None
    digest = fingerprint(source)
    source.write_text("x\n2\n")
    with pytest.raises(StaleFingerprintError) as changed:
        store.save(source, digest=digest)
    assert changed.value.actual == fingerprint(source)
    source.unlink()
    with pytest.raises(StaleFingerprintError, match="gone"):
        store.save(source, digest=digest)
    with pytest.raises(UnsupportedSnapshotError, match="directory"):
        store.save(tmp_path)
    assert stored_files(store) == []


def test_a_damaged_file_snapshot_is_refused(store: SnapshotStore, tmp_path: Path) -> None:
    source = tmp_path / "data.csv"
    source.write_text("x\n1\n2\n")
    snap = store.save(source)
    snap.path.write_text("x\n1\n3\n")
    with pytest.raises(CorruptSnapshotError, match=snap.fingerprint):
        store.load(snap.fingerprint)
    with pytest.raises(CorruptSnapshotError):
        store.get(snap.fingerprint, tmp_path / "back.csv")
    assert not (tmp_path / "back.csv").exists()


class FolderRemote:
    """A remote that is a plain folder, as a stand-in for the MLflow artifact store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uploads = 0

    def upload(self, fingerprint: str, files) -> bool:
        folder = self.root / fingerprint[:2]
        if (folder / f"{fingerprint}.json").exists():
            return False
        folder.mkdir(parents=True, exist_ok=True)
        for path in files:
            (folder / path.name).write_bytes(path.read_bytes())
        self.uploads += 1
        return True

    def download(self, fingerprint: str, folder: Path) -> list[Path]:
        found = sorted((self.root / fingerprint[:2]).glob(f"{fingerprint}.*"))
        for path in found:
            (folder / path.name).write_bytes(path.read_bytes())
        return [folder / path.name for path in found]


def test_a_store_fetches_from_its_remote_what_another_pushed(tmp_path: Path) -> None:
    remote = FolderRemote(tmp_path / "remote")
    first = SnapshotStore(tmp_path / "one", remote=remote)
    df, source = mixed_frame(), tmp_path / "data.csv"
    source.write_text("x\n1\n")
    fps = [first.save(df).fingerprint, first.save(source).fingerprint]
    assert [first.push(fp) for fp in fps] == [True, True] and first.push(fps[0]) is False
    second = SnapshotStore(tmp_path / "two", remote=remote)
    assert fps[0] not in second
    pd.testing.assert_frame_equal(second.load(fps[0]), df, check_index_type=False)
    assert fps[0] in second and second.info(fps[0]).kind == "DataFrame"  # kept, verified
    assert second.get(fps[1], tmp_path / "back.csv").read_text() == "x\n1\n"
    with pytest.raises(SnapshotNotFoundError):
        second.load("0" * 32)
    with pytest.raises(SnapshotError, match="no remote"):
        SnapshotStore(tmp_path / "three").push(fps[0])


def test_a_damaged_remote_copy_is_refused_and_not_kept(tmp_path: Path) -> None:
    remote = FolderRemote(tmp_path / "remote")
    first = SnapshotStore(tmp_path / "one", remote=remote)
    a, b = first.save(pd.DataFrame({"a": [1]})), first.save(pd.DataFrame({"a": [2]}))
    first.push(a.fingerprint)
    (remote.root / a.fingerprint[:2] / a.path.name).write_bytes(b.path.read_bytes())
    second = SnapshotStore(tmp_path / "two", remote=remote)
    with pytest.raises(CorruptSnapshotError, match=f"downloaded from .*fingerprint {b.fingerprint}"):
        second.load(a.fingerprint)
    assert a.fingerprint not in second and stored_files(second) == []


class DamagingStore(SnapshotStore):
    """A store whose disk flips one byte in the middle of every file it writes, before it is checked."""

    def _check_written(self, tmp: Path, *args, **kwargs) -> None:
        data = bytearray(tmp.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tmp.write_bytes(bytes(data))
        super()._check_written(tmp, *args, **kwargs)


def test_a_write_damaged_before_it_is_published_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    store = DamagingStore(tmp_path / "data")
    df = big_frame(1_000_000)  # several row groups: read back and fingerprinted one at a time
    with pytest.raises(CorruptSnapshotError) as info:
        store.save(df, max_bytes=None)
    assert info.value.fingerprint == fingerprint(df)
    assert fingerprint(df) not in store and stored_files(store) == []


def test_a_frame_changed_while_it_is_written_is_not_stored(store: SnapshotStore, monkeypatch) -> None:
    from nbmlops.data import snapshots

    df = big_frame(1_000_000)  # three row groups
    before = fingerprint(df)
    chunks = snapshots._row_chunks

    def changing(obj, kind):  # another thread writes to the frame once the first row group is out
        for n, table in enumerate(chunks(obj, kind)):
            yield table
            if n == 0:
                obj.iloc[-1, 0] = 1e9

    monkeypatch.setattr(snapshots, "_row_chunks", changing)
    with pytest.raises(StaleFingerprintError) as info:
        store.save(df, max_bytes=None, digest=before)
    assert info.value.actual == fingerprint(df) != before
    assert before not in store and stored_files(store) == []


@pytest.mark.parametrize("text", [False, True], ids=["numbers", "numbers-and-text"])
def test_a_large_frame_is_snapshotted_without_a_second_copy_in_memory(tmp_path: Path, text: bool) -> None:
    """Writing and verifying a 200 MB frame (of numbers; of numbers and pandas' str text) adds at most a
    quarter of it to the process's peak memory (the write and the read-back go one row group at a time);
    measured in a child process."""
    script = textwrap.dedent(
        f"""
        import pathlib, numpy as np, pandas as pd
        from nbmlops.data.fingerprint import fingerprint
        from nbmlops.data.snapshots import SnapshotStore
        rng = np.random.default_rng(0)
        rows = 200_000_000 // 64
        df = pd.DataFrame({{f"c{{i}}": rng.standard_normal(rows) for i in range({6 if text else 8})}})
        if {text}:  # two columns of 10-character names (about 13 bytes a row each, with offsets)
            names = pd.Series([f"name-{{i:05d}}" for i in range(50_000)], dtype="str")
            for c in ("a", "b"):
                df[c] = names.take(rng.integers(0, len(names), rows)).reset_index(drop=True)
        fp = fingerprint(df)
        import pyarrow.parquet  # imports are not the snapshot's memory
        def status(key):
            return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # restart the peak (VmHWM) from here
        base = status("VmRSS")
        snap = SnapshotStore(pathlib.Path({str(tmp_path / "data")!r})).save(df, None, digest=fp)
        print(snap.fingerprint == fp, (status("VmHWM") - base) / df.memory_usage(index=True, deep=True).sum())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr
    same, added = out.stdout.split()
    assert same == "True"
    assert float(added) <= 0.25, f"the snapshot added {float(added):.0%} of the frame to the peak memory"
