"""LibriSpeech download: resumable HTTP (Range), MD5 check, extraction that is complete or absent.

Usage:
    python -m rnnt_plugin.data.download /data/librispeech                      (all 7 subsets, ~60 GB)
    python -m rnnt_plugin.data.download /data/librispeech --subsets dev-clean test-clean \
        --mirror https://openslr.elda.org/resources/12 --remove-archives

Layout: archives go to ``DATA_DIR/archives/<subset>.tar.gz`` (``.part`` while incomplete; a re-run resumes it
with an HTTP Range request); subsets are extracted to ``DATA_DIR/LibriSpeech/<subset>/``. Extraction goes to a
temporary directory first, the subset is moved into place with one rename, and the marker
``DATA_DIR/LibriSpeech/.<subset>.complete`` is written last: a subset without its marker is redone.
"""

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from rnnt_plugin.data import fileio

DEFAULT_MIRROR = "https://www.openslr.org/resources/12"
# MD5 of each archive, as published in https://www.openslr.org/resources/12/md5sum.txt
PUBLISHED_MD5 = {
    "train-clean-100": "2a93770f6d5c6c964bc36631d331a522",
    "train-clean-360": "c0e676e450a7ff2f54aeade5171606fa",
    "train-other-500": "d1a0fd59409feb2c614ce4d30c387708",
    "dev-clean": "42e2234ba48799c1f50f24a7926300a1",
    "dev-other": "c8d0bcc9cca99d4f8b62fcc847357931",
    "test-clean": "32fa31d27d2e1cad72775fee3f4849a9",
    "test-other": "fb5a50374b501bb3bac4815ee91d3135",
}
CHUNK = 1 << 20  # bytes per read
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError)


def _bar(total: int | None, desc: str, unit: str = "B", progress: bool = True):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr, disable=not progress)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()  # noqa: S324 - the publisher's checksum, not security
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, dest: str | Path, md5: str | None = None, retries: int = 5, timeout: float = 60.0,
          backoff: float = 1.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming ``dest.part`` with Range requests after a cut connection.

    ``dest`` appears only complete and, when ``md5`` is given, verified: a mismatch removes the download and
    raises ValueError naming the file and both checksums. Attempt k waits ``backoff * 2**(k-1)`` s (<= 30 s);
    RuntimeError after ``retries`` failed attempts.
    """
    dest = Path(dest)
    if dest.exists() and (md5 is None or md5sum(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(backoff * 2 ** (attempt - 1), 30.0))
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                if offset and response.status != 206:  # the server ignored the range: start over
                    offset = 0
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                with open(part, "ab" if offset else "wb") as out, \
                        _bar(total, dest.name, progress=progress) as bar:
                    bar.update(offset)
                    while block := response.read(CHUNK):
                        out.write(block)
                        bar.update(len(block))
            if total is not None and part.stat().st_size < total:
                raise ConnectionError(f"connection closed at byte {part.stat().st_size} of {total}")
            break
        except urllib.error.HTTPError as e:
            if e.code == 416 and offset:  # nothing left to send: the part file is complete (or wrong: MD5 tells)
                break
            if e.code < 500:
                raise RuntimeError(f"{url}: HTTP {e.code} {e.reason}") from e
            last_error = e
        except _NETWORK_ERRORS as e:
            last_error = e
    else:
        kept = f"; {part} is kept and a re-run resumes it" if part.exists() else ""
        raise RuntimeError(f"{url}: gave up after {retries + 1} attempts ({last_error}){kept}")
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise ValueError(f"{dest.name}: MD5 {got} does not match the expected {md5}; the download was removed")
    os.replace(part, dest)
    return dest


def extract(archive: str | Path, data_dir: str | Path, subset: str, progress: bool = True) -> Path:
    """Extract ``LibriSpeech/<subset>`` of ``archive`` into ``data_dir`` as one rename, then the marker.

    The archive's top-level ``LibriSpeech/*.TXT`` files (speakers, chapters, licence) are moved beside it.
    ValueError when the archive does not hold ``LibriSpeech/<subset>/``.
    """
    data_dir = Path(data_dir)
    root = data_dir / "LibriSpeech"
    target, marker = root / subset, root / f".{subset}.complete"
    if marker.exists() and target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=f".extract-{subset}-") as tmp:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            with _bar(len(members), f"extracting {subset}", unit="file", progress=progress) as bar:
                for member in members:
                    tar.extract(member, tmp, filter="data")
                    bar.update(1)
        extracted = Path(tmp) / "LibriSpeech" / subset
        if not extracted.is_dir():
            raise ValueError(f"archive {archive} does not hold LibriSpeech/{subset}/")
        for extra in (Path(tmp) / "LibriSpeech").glob("*.TXT"):
            os.replace(extra, root / extra.name)
        if target.exists():  # a previous run moved it in but died before the marker
            shutil.rmtree(target)
        os.replace(extracted, target)
    fileio.write_text(marker, f"{subset} extracted from {Path(archive).name}\n")
    return target


def download(data_dir: str | Path, subsets: list[str] | None = None, mirror: str = DEFAULT_MIRROR,
             checksums: dict[str, str] | None = None, remove_archives: bool = False, retries: int = 5,
             timeout: float = 60.0, backoff: float = 1.0, progress: bool = True) -> dict[str, Path]:
    """Download, verify and extract ``subsets`` (default: all 7) into ``data_dir``; subset -> extracted dir.

    ``checksums`` (subset -> MD5) defaults to the published ones. Subsets already extracted are skipped.
    """
    checksums = PUBLISHED_MD5 if checksums is None else checksums
    subsets = list(checksums) if subsets is None else list(subsets)
    unknown = [s for s in subsets if s not in checksums]
    if unknown:
        raise ValueError(f"subsets {unknown} have no checksum; known: {sorted(checksums)}")
    data_dir = Path(data_dir)
    done = {}
    for subset in subsets:
        target = data_dir / "LibriSpeech" / subset
        if (data_dir / "LibriSpeech" / f".{subset}.complete").exists() and target.is_dir():
            done[subset] = target
            continue
        archive = fetch(f"{mirror.rstrip('/')}/{subset}.tar.gz", data_dir / "archives" / f"{subset}.tar.gz",
                        checksums[subset], retries=retries, timeout=timeout, backoff=backoff, progress=progress)
        done[subset] = extract(archive, data_dir, subset, progress=progress)
        if remove_archives:
            archive.unlink()
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--subsets", nargs="+", default=list(PUBLISHED_MD5), choices=list(PUBLISHED_MD5))
    parser.add_argument("--mirror", default=DEFAULT_MIRROR, help="base URL holding <subset>.tar.gz")
    parser.add_argument("--remove-archives", action="store_true", help="delete each archive once extracted")
    parser.add_argument("--retries", type=int, default=5, help="resumed attempts after a cut connection")
    args = parser.parse_args(argv)
    try:
        done = download(args.data_dir, args.subsets, args.mirror, remove_archives=args.remove_archives,
                        retries=args.retries)
    except (RuntimeError, ValueError) as e:
        sys.exit(f"download failed: {e}")
    for subset, path in done.items():
        print(f"{subset}: {path}")


if __name__ == "__main__":
    main()
