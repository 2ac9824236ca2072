"""The `digitgen-synthetic` HDF5 format, version 1 (see DESIGN.md): writer, reader, torch Dataset.

The writer builds the file in memory (chunked and compressed: about 300 bytes a row) and writes it under
a temporary name, renamed into place only when complete, so the final name never holds a half file. In
memory, because a write that fails inside the HDF5 library (a full disk) leaves the library unable to
close the file, and it then crashes the process at exit; a write of the finished image fails in Python.
"""

import json
import os
import re
import select
import signal
import sys
import time
import warnings
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import h5py
import numpy as np
import torch
from h5py import h5a, h5d, h5l, h5o, h5z

from data.errors import InputError, prepare_output
from data.files import lock_output, write_atomic
from data.mnist import DEFAULT_DIRS

FORMAT, FORMAT_VERSION = "digitgen-synthetic", 1
CALLER_ATTRS = ("dataset", "generator_sha256", "labeller_sha256", "seed", "min_confidence", "balance", "config")
CHUNK = 1024
COLUMNS = {"images": ("u1", (28, 28)), "labels": ("u1", ()), "confidence": ("f4", ()), "probs": ("f2", (10,))}


def tool_version() -> str:
    try:
        return version("digitgen")
    except PackageNotFoundError:
        return "unknown"


class SyntheticWriter:
    """Append batches of labelled digits; `close()` publishes the file, an exception discards it.

    attrs must give the CALLER_ATTRS (config as a dict); the writer adds format, version,
    created, tool_version and class_counts.
    """

    def __init__(self, path: str | Path, attrs: dict, nz: int | None = None,
                 conditional: bool = False, overwrite: bool = False):
        self.path = Path(path)
        missing = [k for k in CALLER_ATTRS if k not in attrs]
        if missing:
            raise ValueError(f"missing attributes: {missing}")
        prepare_output(self.path, overwrite)
        self.release = lock_output(self.path)
        try:  # a Ctrl-C or SIGTERM from here on discards, lock included
            self.file = h5py.File(str(self.path), "w", driver="core", backing_store=False)  # nothing on disk yet
            self._start(attrs, nz, conditional)
        except BaseException:
            self.discard()
            raise

    def _start(self, attrs: dict, nz: int | None, conditional: bool) -> None:
        self.counts = np.zeros(10, np.int64)
        self.n = 0
        columns = dict(COLUMNS)
        if nz is not None:
            columns["latents"] = ("f4", (nz,))
        if conditional:
            columns["condition"] = ("i2", ())
        for name, (dtype, tail) in columns.items():
            self.file.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=dtype,
                                     chunks=(CHUNK, *tail), compression="gzip", compression_opts=4, shuffle=True)
        root = self.file.attrs
        root["format"], root["format_version"] = FORMAT, FORMAT_VERSION
        root["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        root["tool_version"] = tool_version()
        for key in CALLER_ATTRS:
            value = attrs[key]
            root[key] = json.dumps(value) if key == "config" else ("" if value is None else value)

    def append(self, images, labels, confidence, probs, latents=None, condition=None) -> None:
        """Add one batch; arrays or tensors, the same length, in the format's dtypes or castable."""
        batch = {"images": images, "labels": labels, "confidence": confidence, "probs": probs}
        if "latents" in self.file:
            batch["latents"] = latents
        if "condition" in self.file:
            batch["condition"] = condition
        arrays = {k: np.asarray(v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        b = len(arrays["labels"])
        if any(len(a) != b for a in arrays.values()):
            raise ValueError("batch columns differ in length")
        for name, a in arrays.items():
            ds = self.file[name]
            ds.resize(self.n + b, axis=0)
            ds[self.n:] = a
        self.counts += np.bincount(arrays["labels"], minlength=10)
        self.n += b

    def close(self) -> Path:
        """Finish the file and write it into place (a full disk: an OSError, nothing under the final name)."""
        try:
            self.file.attrs["class_counts"] = json.dumps({str(c): int(k) for c, k in enumerate(self.counts)})
            self.file.flush()
            image = self.file.id.get_file_image()
            self.file.close()
            write_atomic(self.path, lambda tmp: tmp.write_bytes(image))
        except BaseException:
            self.discard()
            raise
        self.release()
        return self.path

    def discard(self) -> None:
        try:
            if hasattr(self, "file"):
                self.file.close()
        finally:
            self.release()

    def __enter__(self) -> "SyntheticWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()


def shard_path(out: Path, rank: int, world: int) -> Path:
    """Where process `rank` of `world` writes its share of `out`: beside it, named after it."""
    return out.with_name(f"{out.stem}-shard{rank}-of-{world}{out.suffix}")


def join_shards(out: Path, shards: list[Path], layout: list[tuple[int, int]], merge: str, overwrite: bool) -> None:
    """The shards' rows as one file, in sequence order; layout: (shard, rows) per batch. vds: virtual datasets
    over the shards, which must stay beside it (the reader follows only such sources); copy: a file of its own,
    the shards then removed."""
    files = [h5py.File(p, "r") for p in shards]
    try:
        first = files[0]
        columns = [name for name in (*COLUMNS, "latents", "condition") if name in first]
        if merge == "copy":
            attrs = {k: json.loads(first.attrs[k]) if k == "config" else first.attrs[k] for k in CALLER_ATTRS}
            nz = first["latents"].shape[1] if "latents" in first else None
            with SyntheticWriter(out, attrs, nz=nz, conditional="condition" in first, overwrite=overwrite) as writer:
                for (r, rows), start in zip(layout, _starts(layout, len(files))):
                    if rows:
                        writer.append(**{c: files[r][c][start:start + rows] for c in columns})
        else:
            release = lock_output(out)
            try:
                write_atomic(out, lambda tmp: _write_virtual(tmp, files, shards, layout, columns))
            finally:
                release()
    finally:
        for f in files:
            f.close()
    if merge == "copy":
        for p in shards:
            p.unlink()


def _starts(layout: list[tuple[int, int]], shards: int) -> list[int]:
    """Where each batch's rows begin in its shard."""
    at, starts = [0] * shards, []
    for r, rows in layout:
        starts.append(at[r])
        at[r] += rows
    return starts


def _write_virtual(path: Path, files: list, shards: list[Path], layout: list[tuple[int, int]], columns: list) -> None:
    counts = sum(np.array(list(json.loads(f.attrs["class_counts"]).values())) for f in files)
    with h5py.File(path, "w") as out:
        for key, value in files[0].attrs.items():
            out.attrs[key] = value
        out.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        out.attrs["class_counts"] = json.dumps({str(c): int(k) for c, k in enumerate(counts)})
        total = sum(rows for _, rows in layout)
        for c in columns:
            ds = files[0][c]
            virtual = h5py.VirtualLayout(shape=(total, *ds.shape[1:]), dtype=ds.dtype)
            at = 0
            for (r, rows), start in zip(layout, _starts(layout, len(files))):
                if rows:
                    source = h5py.VirtualSource(shards[r].name, c, shape=files[r][c].shape)  # a name: beside it
                    virtual[at:at + rows] = source[start:start + rows]
                    at += rows
            out.create_virtual_dataset(c, virtual)


# The reader. A hostile file must end in an InputError naming it and saying what is wrong: never a traceback,
# never a read outside the file (external storage, external or soft links, filter plugins, virtual datasets
# other than over the valid shards beside it that join_shards writes), never an allocation the file's declared
# shapes could blow up.

DATASETS = tuple(DEFAULT_DIRS)
MAX_ROWS = 2_000_000  # 28x28 uint8 images: 1.5 GiB in memory; more is refused before anything is allocated
MAX_NZ = 4096  # latent width
MAX_CHUNK_BYTES = 64 << 20  # HDF5 decompresses a whole chunk to read one row of it
FILTERS = {h5z.FILTER_DEFLATE, h5z.FILTER_SHUFFLE, h5z.FILTER_FLETCHER32, h5z.FILTER_LZF}  # built in: no plugin loads
ATTRS = {  # every root attribute of the format, in the order checked, and its kind
    "format": "str", "format_version": "int", "created": "str", "tool_version": "str", "dataset": "str",
    "generator_sha256": "str", "labeller_sha256": "str", "seed": "int", "min_confidence": "real", "balance": "bool",
    "class_counts": "str", "config": "str",  # both JSON
}
SHA256 = re.compile(r"[0-9a-f]{64}")
METADATA_SECONDS = 20.0  # the forked metadata check of a valid file takes milliseconds; past this, it hangs


@contextmanager
def _opened(path: str | Path):
    """Open and validate a file (metadata only, see `_problem`); yields (file, decoded attributes, rows).
    Any error inside the block, h5py's included (a corrupt chunk shows only when read), becomes an
    InputError naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    _guard(path)
    try:
        f = h5py.File(path, "r")
    except Exception as e:  # OSError mostly; a damaged superblock can raise others
        raise InputError(f"{path}: not an HDF5 file, or a corrupt one ({_say(e)})") from None
    try:
        try:
            checked = _problem(f, path.stat().st_size)
        except Exception as e:  # a damaged file can fail anywhere inside h5py
            checked = f"unreadable, corrupt HDF5 ({_say(e)})"
        if isinstance(checked, str):
            raise InputError(f"{path}: {checked}")
        try:
            yield (f, *checked)
        except InputError as e:
            raise InputError(f"{path}: {e}") from None
        except Exception as e:
            raise InputError(f"{path}: unreadable, corrupt HDF5 ({_say(e)})") from None
    finally:
        try:
            f.close()
        except Exception:
            pass


def _guard(path: Path) -> None:
    """Run the metadata check (open + `_problem`) first in a forked child with a time limit. Some damaged
    structures (e.g. a global heap object's size, where string attributes live) make the HDF5 library itself
    loop forever, deep in C, where no Python signal handler runs (even Ctrl-C is ignored); others could crash
    it. The same deterministic check that finishes in the child finishes here; one that does not is refused.
    Linux only (fork without exec is unsafe elsewhere); elsewhere such a file still hangs the reader."""
    if not sys.platform.startswith("linux"):
        return
    try:
        with warnings.catch_warnings():  # Python 3.12+ warns about fork in a threaded process (torch's pools)
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # no memory or processes left for a child: read unguarded
        return
    if pid == 0:  # the child: check, then leave without running any exit handler (HDF5's would flush files)
        try:
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, signal.SIG_DFL)
            signal.alarm(int(METADATA_SECONDS) + 2)  # dies on its own, even inside C, should its parent be killed
            with h5py.File(path, "r") as f:
                _problem(f, path.stat().st_size)
        except BaseException:
            pass
        os._exit(0)
    status = None
    try:
        status = _wait(pid, METADATA_SECONDS)
    finally:  # also on Ctrl-C, which the parent, waiting in Python, always sees
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    if status is None:
        raise InputError(f"{path}: corrupt HDF5: reading its metadata did not finish in {METADATA_SECONDS:g} s "
                         f"(a damaged structure makes the HDF5 library loop)")
    if os.WIFSIGNALED(status):
        raise InputError(f"{path}: corrupt HDF5: reading its metadata crashes the HDF5 library "
                         f"(signal {os.WTERMSIG(status)})")


def _wait(pid: int, seconds: float) -> int | None:
    """The child's wait status, or None if it is still running after `seconds`."""
    try:
        fd = os.pidfd_open(pid)  # Linux 5.3+: readable when the child ends, so no polling delay
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        try:
            if not select.select([fd], [], [], seconds)[0]:
                return None
        finally:
            os.close(fd)
        return os.waitpid(pid, 0)[1]
    deadline, pause = time.monotonic() + seconds, 0.001
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(pause)
        pause = min(2 * pause, 0.05)


def _say(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e)[:200]}"


def _problem(f: h5py.File, file_size: int, virtual: bool = True) -> str | tuple[dict, int]:
    """What is wrong with an open file, or its (decoded attributes, rows) if nothing is. Only metadata is
    read here, and every shape is checked before anything is allocated for it. virtual: whether its datasets
    may be virtual (the joined file of a sharded `generate`; its shards may not be)."""
    attrs = {}
    for key, kind in ATTRS.items():
        value = _attribute(f, key, kind)
        if isinstance(value, _Bad):
            if key == "format":
                return f"not a {FORMAT} file (format attribute: {value})"
            return f"attribute {key!r}: {value}"
        attrs[key] = value
        if key == "format" and value != FORMAT:
            return f"not a {FORMAT} file (format attribute is {value[:80]!r})"
        if key == "format_version" and value != FORMAT_VERSION:
            return f"format version {value!r}, this tool reads version {FORMAT_VERSION}"
    try:
        datetime.fromisoformat(attrs["created"])
    except ValueError:
        return f"attribute 'created' is {attrs['created'][:80]!r}, not an ISO 8601 time"
    if attrs["dataset"] not in DATASETS:
        return f"attribute 'dataset' is {attrs['dataset'][:80]!r}, expected one of {', '.join(DATASETS)}"
    for key in ("generator_sha256", "labeller_sha256"):
        if not SHA256.fullmatch(attrs[key]):
            return f"attribute {key!r} is {attrs[key][:80]!r}, not a sha256 (64 lowercase hex digits)"
    if not 0 <= attrs["seed"] < 2**63:
        return f"attribute 'seed' is {attrs['seed']}, outside 0..2^63-1"
    if not 0 <= attrs["min_confidence"] <= 1:  # NaN fails this too
        return f"attribute 'min_confidence' is {attrs['min_confidence']}, outside 0..1"
    for key in ("class_counts", "config"):
        try:
            attrs[key] = json.loads(attrs[key])
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            return f"attribute {key!r} is not JSON ({_say(e)[:100]})"
    config = attrs["config"]
    if not isinstance(config, dict):
        return f"attribute 'config' is a JSON {type(config).__name__}, expected an object"
    for key in ("generator", "labeller"):
        if key in config and not isinstance(config[key], str):
            return f"attribute 'config': {key} is {str(config[key])[:80]}, expected a path"

    n = None
    for name, (dtype, tail) in _columns(f).items():
        problem = _dataset_problem(f, name, dtype, tail, file_size, virtual)
        if problem:
            return problem
        rows = f[name].shape[0]
        if n is None:
            n = rows
        elif rows != n:
            return f"/{name} holds {rows} rows but /images holds {n}"

    counts = attrs["class_counts"]
    if (not isinstance(counts, dict) or sorted(counts) != sorted(map(str, range(10)))
            or not all(type(k) is int and k >= 0 for k in counts.values())):
        return f"attribute 'class_counts' is {json.dumps(counts)[:120]}, expected counts of the digits 0..9"
    if sum(counts.values()) != n:
        return f"attribute 'class_counts' adds up to {sum(counts.values())} but the file holds {n} rows"
    attrs["class_counts"] = {str(c): counts[str(c)] for c in range(10)}
    return attrs, n


class _Bad(str):
    """Why an attribute is unusable."""


def _attribute(f: h5py.File, key: str, kind: str):
    """A scalar root attribute of the given kind as a Python value, or _Bad; its shape and type are checked
    before it is read."""
    name = key.encode()
    if not h5a.exists(f.id, name):
        return _Bad("missing")
    with closing(h5a.open(f.id, name)) as attr:
        shape, dtype = attr.shape, attr.dtype
    if shape != ():
        return _Bad(f"shape {shape}, expected a single value")
    if kind == "str" and h5py.check_string_dtype(dtype) is None:
        return _Bad(f"type {dtype}, expected a string")
    if kind != "str" and dtype.kind not in {"int": "iu", "real": "iuf", "bool": "b"}[kind]:
        return _Bad(f"type {dtype}, expected {'true or false' if kind == 'bool' else 'a number'}")
    value = f.attrs[key]
    if isinstance(value, bytes):  # a fixed-length string
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return _Bad("not UTF-8 text")
    if isinstance(value, np.generic):
        value = value.item()
    if kind == "str" and not isinstance(value, str):
        return _Bad(f"{str(value)[:80]}, expected a string")
    if kind == "bool" and not isinstance(value, bool):
        return _Bad(f"{value!r}, expected true or false")
    if kind in ("int", "real") and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or (kind == "int" and not isinstance(value, int))):
        return _Bad(f"{value!r}, expected {'an integer' if kind == 'int' else 'a number'}")
    return value


def _columns(f: h5py.File) -> dict:
    """The format's datasets in this file: {name: (dtype, shape after the row axis; None: (nz,))}."""
    expected = dict(COLUMNS)
    if f.id.links.exists(b"latents"):  # H5Lexists looks at the link only: it follows nothing
        expected["latents"] = ("f4", None)
    if f.id.links.exists(b"condition"):
        expected["condition"] = ("i2", ())
    return expected


def _dataset_problem(f: h5py.File, name: str, dtype: str, tail: tuple | None, file_size: int,
                     virtual: bool) -> str | None:
    """Is /name a dataset stored in this file (or, virtual, in shards beside it), of the format's dtype and
    shape, sane in size, and all there?"""
    key = name.encode()
    if not f.id.links.exists(key):
        return f"missing dataset /{name}"
    link = f.id.links.get_info(key).type
    if link != h5l.TYPE_HARD:
        what = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link (to another file)"}
        return f"/{name} is {what.get(link, 'a user-defined link')}; this reader never follows a link"
    if h5o.get_info(f.id, key).type != h5o.TYPE_DATASET:
        return f"/{name} is not a dataset"
    ds = f[name]
    with closing(ds.id.get_create_plist()) as dcpl:
        layout = dcpl.get_layout()
        if layout == h5d.VIRTUAL and not virtual:
            return f"/{name} is a virtual dataset inside a shard; this reader follows one level only"
        problem = _virtual_problem(f, name) if layout == h5d.VIRTUAL else None
        if problem:
            return problem
        if dcpl.get_external_count():
            return f"/{name} uses external storage (its data lies in another file); this reader never follows it"
        if layout not in (h5d.CHUNKED, h5d.CONTIGUOUS, h5d.COMPACT, h5d.VIRTUAL):
            return f"/{name} has an unknown storage layout ({layout})"
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())] if layout == h5d.CHUNKED else []
    shape = ds.shape
    if tail is None:  # latents: (N, nz)
        tail = shape[1:2] if shape is not None and len(shape) == 2 and 1 <= shape[1] <= MAX_NZ else (f"1..{MAX_NZ}",)
    if shape is None or len(shape) != 1 + len(tail) or shape[1:] != tail or ds.dtype != np.dtype(dtype):
        return f"/{name} is {ds.dtype} {shape}, expected {np.dtype(dtype)} {('N', *tail)}".replace("'", "")
    rows = shape[0]
    if rows > MAX_ROWS:
        return f"/{name} declares {rows:,} rows, more than the {MAX_ROWS:,} this tool reads; corrupt or absurd"
    unknown = [code for code in filters if code not in FILTERS]
    if unknown:
        return f"/{name} uses HDF5 filter {unknown[0]}, not one this tool reads (gzip, shuffle, fletcher32, lzf)"
    stored = ds.id.get_storage_size()
    if stored > file_size:
        return f"/{name} claims {stored:,} bytes of storage, more than the file's {file_size:,}; corrupt"
    nbytes = ds.size * ds.dtype.itemsize
    if layout == h5d.CONTIGUOUS and nbytes:
        offset = ds.id.get_offset()
        if offset is None or stored != nbytes:
            return f"/{name} declares {rows:,} rows but stores no data for them; truncated or corrupt"
        if offset + nbytes > file_size:
            return f"/{name} lies past the end of the file ({file_size:,} bytes); truncated"
    if layout == h5d.CHUNKED:
        chunks = ds.chunks
        if int(np.prod(chunks, dtype=np.int64)) * ds.dtype.itemsize > MAX_CHUNK_BYTES:
            return f"/{name} has chunks of {chunks}, over {MAX_CHUNK_BYTES >> 20} MiB each; refused"
        needed = int(np.prod([-(-d // c) for d, c in zip(shape, chunks)], dtype=np.int64))
        have = ds.id.get_num_chunks()
        if have != needed:
            return f"/{name} declares {rows:,} rows but stores {have} of their {needed} chunks; truncated or corrupt"
    return None


def _virtual_problem(f: h5py.File, name: str) -> str | None:
    """A virtual dataset is followed only as `join_shards` writes it: each source a plain file beside this one,
    named by it, the same column of a valid synthetic file that has no virtual datasets of its own, and the
    selections whole rows that lie inside it and tile this dataset's rows in order."""
    ds, folder, sources, at = f[name], Path(f.filename).parent, {}, 0
    shape = ds.shape or (0,)
    for m in ds.virtual_sources():
        where = f"/{name} is a virtual dataset with a source {m.file_name[:80]!r}"
        if m.file_name in ("", ".") or "/" in m.file_name or m.file_name.startswith(".") or \
                m.dset_name.lstrip("/") != name:
            return f"{where}:{m.dset_name[:40]}: only shards beside it, by name, are followed"
        path = folder / m.file_name
        if m.file_name not in sources:
            if path.is_symlink() or not path.is_file():
                return f"{where} that is not a file beside it"
            with h5py.File(path, "r") as shard:
                checked = _problem(shard, path.stat().st_size, virtual=False)
                if isinstance(checked, str):
                    return f"{where}: {checked}"
                sources[m.file_name] = shard[name].shape
        (v0, *v_rest), (v1, *v_end) = m.vspace.get_select_bounds()
        (s0, *s_rest), (s1, *s_end) = m.src_space.get_select_bounds()
        whole = tuple(n - 1 for n in shape[1:])
        rows = v1 - v0 + 1
        if (v0 != at or s1 - s0 + 1 != rows or s1 >= sources[m.file_name][0] or any(v_rest) or any(s_rest)
                or tuple(v_end) != whole or tuple(s_end) != whole
                or not m.vspace.get_select_npoints() == m.src_space.get_select_npoints() == rows * np.prod(shape[1:])):
            return f"{where} whose rows do not tile it in order"
        at = v1 + 1
    if at != shape[0]:
        return f"/{name} is a virtual dataset whose sources cover {at:,} of its {shape[0]:,} rows"
    return None


def _values_problem(name: str, a: np.ndarray) -> str | None:
    """The values a column may hold: labels and conditions 0..9, finite probabilities in [0, 1]."""
    if name in ("labels", "condition"):
        bad, what = (a < 0) | (a > 9), "outside 0..9"
    elif name in ("confidence", "probs"):
        bad, what = ~((a >= 0) & (a <= 1)), "not a probability (finite, in [0, 1])"  # NaN is bad too
    else:
        return None
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        return f"/{name} row {row} holds {a[row].tolist()}, {what}"
    return None


def _read(f: h5py.File, name: str, n: int) -> np.ndarray:
    """The first n rows of a validated column, its values checked."""
    a = f[name][:n]
    problem = _values_problem(name, a)
    if problem:
        raise InputError(problem)
    return a


def _read_values(f: h5py.File, attrs: dict, rows: int, n: int) -> dict:
    """The first n rows of every column whose values are constrained (labels, confidence, probs and, when
    present, condition), checked; with all rows, the class_counts attribute is checked against the labels too."""
    values = {name: _read(f, name, n) for name in ("labels", "confidence", "probs", "condition") if name in _columns(f)}
    if n == rows:
        found, claimed = np.bincount(values["labels"], minlength=10).tolist(), list(attrs["class_counts"].values())
        if found != claimed:
            raise InputError(f"attribute 'class_counts' says {claimed} but /labels holds {found}")
    return values


@dataclass(frozen=True)
class Synthetic:
    """A synthetic dataset read into memory."""

    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)
    confidence: torch.Tensor  # float32 (N,)
    probs: torch.Tensor  # float32 (N, 10)
    attrs: dict

    def __len__(self) -> int:
        return len(self.labels)


CONFIDENCE_EDGES = (0, 0.5, 0.9, 0.99, 0.999, 1)  # the last bin, [0.999, 1], is closed


def summary(path: str | Path) -> dict:
    """What `info` prints: the format's attributes (JSON decoded), row count, columns, and label and confidence
    statistics computed from the data itself, not trusted from the attributes. Every value column is read
    and validated (not the images, which it does not report: `load_synthetic` and `SyntheticDataset` read those)."""
    with _opened(path) as (f, attrs, n):
        values = _read_values(f, attrs, n, n)
        labels, confidence = values["labels"], values["confidence"]
        return {
            "attrs": attrs,
            "rows": n,
            "columns": {k: (str(f[k].dtype), f[k].shape) for k in _columns(f)},
            "class_counts": np.bincount(labels, minlength=10).tolist(),
            "confidence_quantiles": np.quantile(confidence, [0, 0.5, 1]).tolist() if n else [],
            "confidence_counts": np.histogram(confidence, CONFIDENCE_EDGES)[0].tolist(),
        }


def load_synthetic(path: str | Path, limit: int | None = None) -> Synthetic:
    """The first `limit` rows (all if None) of a valid file, in memory; every value read is validated."""
    if limit is not None and limit < 0:
        raise InputError(f"{path}: cannot read {limit} rows")
    with _opened(path) as (f, attrs, rows):
        n = rows if limit is None else min(limit, rows)
        values = _read_values(f, attrs, rows, n)
        return Synthetic(
            images=torch.from_numpy(f["images"][:n]),
            labels=torch.from_numpy(values["labels"].astype(np.int64)),
            confidence=torch.from_numpy(values["confidence"]),
            probs=torch.from_numpy(values["probs"].astype(np.float32)),
            attrs=attrs,
        )


VERIFY_ROWS = 65536  # SyntheticDataset reads the images through once, this many rows at a time


class SyntheticDataset(torch.utils.data.Dataset):
    """(uint8 image, label) pairs read lazily; each DataLoader worker opens its own handle. The whole file is
    validated (and its images read through once) up front, so that no worker fails later."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with _opened(self.path) as (f, attrs, self.n):
            _read_values(f, attrs, self.n, self.n)
            for start in range(0, self.n, VERIFY_ROWS):
                f["images"][start:start + VERIFY_ROWS]
        self.file = None

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        try:
            if self.file is None:
                self.file = h5py.File(self.path, "r")
            image, label = self.file["images"][i], int(self.file["labels"][i])
        except Exception as e:  # only if the file changed since it was validated
            raise InputError(f"{self.path}: unreadable now ({_say(e)})") from None
        if not 0 <= label <= 9:
            raise InputError(f"{self.path}: /labels row {i} holds {label}, outside 0..9")
        return torch.from_numpy(image), label

    def __getstate__(self):
        return {**self.__dict__, "file": None}  # h5py handles must not cross process boundaries
