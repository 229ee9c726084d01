"""Output folders at a URL (``s3://bucket/prefix``, ``gs://``, ``hdfs://``), through pyarrow's filesystems.

    workbench audit toxicity ... --out s3://bucket/audits/tox       # resumable, like a local folder
    workbench report s3://bucket/audits/tox
    wb.open_cache("s3://bucket/acts/run1")                          # shards fetched as they are read

Every writer in workbench works on a local folder: a write lock, atomic renames, shards
recorded with their sha256. Object stores have none of these, so a run whose output is a
URL works in a local *staging* copy (`staged`): it first downloads what the URL already
holds (that is the resume), and after every finished shard `Mirror.push` uploads the files
that changed: the JSON records (``shards.json``, ``run.json``) first, then the data files,
``manifest.json`` (a cache's "finished" mark) last, the order in which a local run records a
shard before moving it into place. An S3 object appears whole or not at all, so a run killed
at any moment leaves the URL holding whole shards, each recorded, and at most a recorded
shard that is missing; the rerun downloads them, keeps what matches its recorded hash and
computes the rest, exactly as for a local folder.

Credentials and endpoints come from the usual environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``) for an S3-compatible server such as MinIO. The staging copy lives
under ``$WORKBENCH_STAGING_DIR`` (default: the system's temporary folder) and is deleted when
the run ends; a cache needs room there for all of its shards. The folder lock does not reach
the object store: run one writer per URL. A ``file://`` URL is simply a local folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from .errors import InputError, first_line

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")
_ACTIVE: contextvars.ContextVar["Mirror | None"] = contextvars.ContextVar(
    "workbench_mirror", default=None
)
_CHUNK = 8 << 20  # bytes per read/write when copying


def is_url(target) -> bool:
    """Whether `target` is a URL other than file:// (which is a plain local folder)."""
    return isinstance(target, str) and bool(_URL.match(target)) and not target.startswith("file://")


def local_path(target) -> Path:
    """`target` as a local Path (``file:///x`` becomes ``/x``); for local folders and file:// URLs only."""
    text = str(target)
    return Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()


def join(url: str, relative: str) -> str:
    """``join("s3://b/p", "capability")`` is ``"s3://b/p/capability"``."""
    return url.rstrip("/") + "/" + relative.strip("/")


def filesystem(url: str):
    """(pyarrow FileSystem, path inside it) for `url`; a one-line InputError for a scheme pyarrow lacks."""
    # lazy: pyarrow takes 0.2 s to import; only output at a URL needs it
    import pyarrow.fs as pafs

    scheme, _, rest = url.partition("://")
    if scheme == "s3":
        # Built here rather than by FileSystem.from_uri to bound the time a dead endpoint can take.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        root = rest.strip("/")
        if not root:
            raise InputError("an s3:// URL needs a bucket: s3://BUCKET/PREFIX", url)
        fs = pafs.S3FileSystem(
            endpoint_override=endpoint,
            connect_timeout=5,
            request_timeout=60,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=4),
        )
        return fs, root
    if scheme in ("gs", "gcs"):
        # Built here too: from_uri's GCS client retries a dead network for ever.
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")  # a local GCS emulator, for tests
        root = rest.strip("/")
        if not root:
            raise InputError("a gs:// URL needs a bucket: gs://BUCKET/PREFIX", url)
        fs = pafs.GcsFileSystem(
            anonymous=bool(emulator),
            endpoint_override=emulator.split("://")[-1] if emulator else None,
            scheme="http" if emulator else None,
            retry_time_limit=datetime.timedelta(seconds=REMOTE_TIMEOUT_S / 6),
        )
        return fs, root
    try:
        fs, root = pafs.FileSystem.from_uri(url)
    except (ValueError, OSError, ImportError) as error:
        raise InputError(
            f"pyarrow cannot open this URL ({str(error).splitlines()[0]}); use a local folder, "
            "file://, s3://, gs:// or hdfs://",
            url,
        ) from None
    return fs, root.rstrip("/")


def check_url(url: str, flag: str) -> None:
    """Fail fast, before any model work, on a URL whose store cannot be reached or whose bucket is missing."""
    # lazy: pyarrow takes 0.2 s to import; only output at a URL needs it
    import pyarrow.fs as pafs

    staging_base()  # the run works in a staging copy: its folder must be usable, before any work
    fs, root = filesystem(url)
    bucket = root.split("/")[0]
    try:
        top, target = _within_deadline(
            lambda: (
                fs.get_file_info(bucket if url.startswith(("s3://", "gs://")) else root),
                fs.get_file_info(root),
            ),
            url,
            flag,
        )
    except OSError as error:
        raise InputError(
            f"{flag}: cannot reach the store ({first_line(error)}); check "
            f"{CREDENTIAL_HINTS.get(url.partition('://')[0], 'the URL')} and the network",
            url,
        ) from None
    if url.startswith("s3://") and top.type == pafs.FileType.NotFound:
        raise InputError(
            f"{flag}: bucket {bucket!r} does not exist (create it first, e.g. "
            f"`aws s3 mb s3://{bucket}`)",
            url,
        )
    if target.type == pafs.FileType.File:
        raise InputError(f"{flag}: exists and is not a folder", url)


REMOTE_TIMEOUT_S = 30.0  # the longest the first contact with a store may take


def _within_deadline(call, url: str, flag: str):
    """call() on a worker thread, bounded by REMOTE_TIMEOUT_S whatever the store's own timeouts
    (s3 and gs have theirs; hdfs and the others pyarrow opens may not): InputError after it."""
    outcome: dict = {}

    def work():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(REMOTE_TIMEOUT_S)
    if thread.is_alive():
        raise InputError(
            f"{flag}: the store did not answer in {REMOTE_TIMEOUT_S:g} s (no network, or a dead "
            "endpoint); check the URL and the network",
            url,
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class Mirror:
    """A local folder kept in step with a folder at `url`.

    pull() downloads what the URL holds; push() uploads the local files that changed since
    the last pull or push. Names starting with "." (the lock, temporary files) stay local."""

    def __init__(self, url: str, local: Path):
        self.url, self.local = url, Path(local)
        self.fs, self.root = filesystem(url)
        self.known: dict[
            str, tuple[int, int]
        ] = {}  # relative path -> (size, mtime_ns) as last synced
        self._made: set[str] = set()  # folders created on filesystems that need them

    def remote_files(self) -> list[str]:
        """Relative paths of every file under the URL (hidden names left out)."""
        # lazy: pyarrow takes 0.2 s to import; only output at a URL needs it
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.root, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as error:
            raise InputError(f"cannot list ({first_line(error)})", self.url) from None
        names = [
            info.path[len(self.root) :].lstrip("/")
            for info in infos
            if info.type == pafs.FileType.File
        ]
        return sorted(n for n in names if not _hidden(n))

    def pull(self, only: tuple[str, ...] | None = None) -> None:
        """Download every remote file (or only those named) into the local folder."""
        for name in self.remote_files():
            if only is None or name in only:
                self.fetch(name)

    def fetch(self, name: str) -> Path:
        """Download one file (relative path) into the local folder, atomically; returns its local path.
        A name that would land outside the local folder (``../x``, an absolute path) is refused."""
        parts = name.split("/")
        if (
            not name
            or name.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or "\\" in name
        ):
            raise InputError(
                f"refused to download {name!r}: not a relative path inside the folder", self.url
            )
        target = self.local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.download")
        try:
            with (
                self.fs.open_input_stream(f"{self.root}/{name}") as source,
                open(partial, "wb") as sink,
            ):
                while chunk := source.read(_CHUNK):
                    sink.write(chunk)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise InputError(f"cannot download {name} ({first_line(error)})", self.url) from None
        os.replace(partial, target)
        self.known[name] = _stamp(target)
        return target

    def push(self) -> list[str]:
        """Upload the files that changed locally; returns their relative paths, in upload order."""
        changed = [
            name
            for name in self._local_files()
            if self.known.get(name) != _stamp(self.local / name)
        ]
        changed.sort(key=_upload_order)
        for name in changed:
            stamp = _stamp(self.local / name)
            try:
                parent = f"{self.root}/{name}".rpartition("/")[0]
                # object stores have no folders
                if self.fs.type_name != "s3" and parent not in self._made:
                    self.fs.create_dir(parent, recursive=True)
                    self._made.add(parent)
                with (
                    open(self.local / name, "rb") as source,
                    self.fs.open_output_stream(f"{self.root}/{name}") as sink,
                ):
                    while chunk := source.read(_CHUNK):
                        sink.write(chunk)
            except OSError as error:
                raise InputError(
                    f"cannot upload {name} ({first_line(error)}); what was uploaded before is "
                    "kept there, so rerunning the same command resumes from it",
                    self.url,
                ) from None
            self.known[name] = stamp
        return changed

    def _local_files(self) -> list[str]:
        return sorted(
            str(p.relative_to(self.local))
            for p in self.local.rglob("*")
            if p.is_file() and not _hidden(str(p.relative_to(self.local)))
        )


@contextlib.contextmanager
def staged(target) -> Iterator[Path]:
    """The local folder to work in for `target`.

    A local path (or file:// URL) is yielded as a Path. For any other URL, a fresh staging
    folder is filled from the URL, yielded, pushed after every shard (`shard_finished`) and
    once more at the end, whether the block succeeds or fails, then deleted. Nested calls for
    the same URL share one staging folder."""
    if not is_url(target):
        yield local_path(target)
        return
    active = _ACTIVE.get()
    if active is not None and active.url.rstrip("/") == target.rstrip("/"):
        yield active.local
        return
    # a sub-folder of the active one
    if active is not None and target.startswith(active.url.rstrip("/") + "/"):
        yield active.local / target[len(active.url.rstrip("/")) + 1 :]
        return
    folder = _new_staging_folder()
    mirror = Mirror(target, folder)
    token = _ACTIVE.set(mirror)
    try:
        mirror.pull()
        yield folder
        mirror.push()
    except BaseException:
        with contextlib.suppress(Exception):
            mirror.push()  # keep every finished shard: the rerun resumes from it
        raise
    finally:
        _ACTIVE.reset(token)
        shutil.rmtree(folder, ignore_errors=True)


def shard_finished() -> None:
    """Called by the shard loops after each finished shard: upload it if the run writes to a URL."""
    mirror = _ACTIVE.get()
    if mirror is not None:
        mirror.push()


def remote_name(local: Path | str) -> str:
    """The URL of a file in the active staging folder (or the path itself when nothing is staged)."""
    mirror = _ACTIVE.get()
    path = Path(local)
    if mirror is not None:
        with contextlib.suppress(ValueError):
            return join(mirror.url, str(path.relative_to(mirror.local)))
    return str(local)


def staging_base() -> Path:
    """$WORKBENCH_STAGING_DIR (default: the system's temporary folder), checked: a folder this
    process can create files in. InputError naming it and the variable otherwise."""
    base = Path(os.environ.get("WORKBENCH_STAGING_DIR") or tempfile.gettempdir()).expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(
            f"cannot create the staging folder ({error.strerror}); set WORKBENCH_STAGING_DIR to "
            "a writable folder",
            str(base),
        ) from None
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise InputError(
            "the staging folder is not a writable folder (read-only, no permission, or a file); "
            "set WORKBENCH_STAGING_DIR to a writable folder",
            str(base),
        )
    return base


def _new_staging_folder() -> Path:
    """A fresh staging folder; folders left by killed runs (their PID gone) are removed first."""
    base = staging_base()
    for old in base.glob("workbench-staging-*"):
        match = re.fullmatch(r"workbench-staging-(\d+)-.*", old.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"workbench-staging-{os.getpid()}-", dir=base))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in Path(relative).parts)


def _upload_order(name: str) -> int:
    """JSON records (shards.json, run.json) first, then data files, manifest.json (a finished cache's
    mark) last. A shard is recorded before it is uploaded, as it is recorded before it is moved into
    place locally: a kill in between leaves a recorded shard that is missing (recomputed on resume),
    never a finished shard without a record (which a resume would have to set aside)."""
    base = Path(name).name
    if base == "manifest.json":
        return 2
    return 0 if base.endswith(".json") else 1


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


CREDENTIAL_HINTS = {
    "s3": "AWS_ENDPOINT_URL and the AWS credentials",
    "gs": "the Google credentials (GOOGLE_APPLICATION_CREDENTIALS)",
    "gcs": "the Google credentials (GOOGLE_APPLICATION_CREDENTIALS)",
}
