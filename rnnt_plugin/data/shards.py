"""Webdataset tar shards of a manifest, in the layout NeMo's tarred audio datasets read.

Usage:
    python -m rnnt_plugin.data.shards /data/LibriSpeech/manifests/train-clean-100.json /data/shards/tc100 \
        --shards 32 --seed 0      (several manifests before OUT_DIR are sharded together)
    (or ``python -m rnnt_plugin.data.librispeech prepare ... --shards 32``: the training subsets together)

Output in OUT_DIR, each file written atomically:
    audio_<i>.tar                  i = 0..N-1; per utterance ``<utt id>.flac`` (the original bytes) and
                                   ``<utt id>.txt`` (its transcript), in shuffled order
    tarred_audio_manifest.json     the manifest rows (audio_filepath = "<utt id>.flac", duration, text,
                                   shard_id), in shard order
    sharded_manifests/manifest_<i>.json   the rows of shard i (for ``shard_manifests: true``)
    shards.json                    how to point NeMo at them:
        model.train_ds.is_tarred=true
        model.train_ds.tarred_audio_filepaths=OUT_DIR/audio__OP_0..N-1_CL_.tar   (NeMo's brace expansion)
        model.train_ds.manifest_filepath=OUT_DIR/tarred_audio_manifest.json
For the real corpus pick N for shards of 100-500 MB (960 h of FLAC is ~60 GB: N = 256 gives ~230 MB).
"""

import argparse
import io
import random
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rnnt_plugin.data import fileio
from rnnt_plugin.data.manifest import read_manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)  # fixed metadata (mtime 0, uid 0): same input -> same bytes
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, rows: list[dict], sources: list[str]) -> None:
    with fileio.atomic_path(path) as tmp:
        with tarfile.open(tmp, "w") as tar:
            for row, source in zip(rows, sources):
                key = row["audio_filepath"].rsplit(".", 1)[0]
                _add(tar, row["audio_filepath"], Path(source).read_bytes())
                _add(tar, f"{key}.txt", row["text"].encode("utf-8"))


def write_shards(manifest: str | Path | list, out_dir: str | Path, num_shards: int, seed: int = 0,
                 jobs: int = 2) -> Path:
    """Shuffle ``manifest`` (one path or a list, taken together) with ``seed``; cut it into ``num_shards`` tars.

    Returns the path of ``shards.json`` (see the module doc). ValueError for a manifest with bad lines, two
    utterances with the same file name, or fewer utterances than shards.
    """
    manifests = [manifest] if isinstance(manifest, (str, Path)) else list(manifest)
    sources = ", ".join(map(str, manifests))
    rows = []
    for path in manifests:
        found, issues = read_manifest(path)
        if issues:
            raise ValueError(f"manifest {path}: " + "; ".join(map(str, issues[:5])))
        rows += found
    if not 1 <= num_shards <= len(rows):
        raise ValueError(f"num_shards must be in 1..{len(rows)} (utterances in {sources}), got {num_shards}")
    names = [Path(r["audio_filepath"]).name for r in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"manifests {sources}: audio file names must be unique (they key the tar members)")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    out_dir = Path(out_dir)
    bounds = [len(order) * i // num_shards for i in range(num_shards + 1)]
    shard_rows, shard_sources = [], []
    for shard in range(num_shards):
        picked = order[bounds[shard]:bounds[shard + 1]]
        shard_rows.append([{"audio_filepath": names[i], "duration": rows[i]["duration"], "text": rows[i]["text"],
                            "shard_id": shard} for i in picked])
        shard_sources.append([rows[i]["audio_filepath"] for i in picked])
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(lambda i: _write_shard(out_dir / f"audio_{i}.tar", shard_rows[i], shard_sources[i]),
                      range(num_shards)))
    for shard, part in enumerate(shard_rows):
        fileio.write_jsonl(out_dir / "sharded_manifests" / f"manifest_{shard}.json", part)
    fileio.write_jsonl(out_dir / "tarred_audio_manifest.json", (r for part in shard_rows for r in part))
    info = {"tarred_audio_filepaths": str(out_dir.resolve() / f"audio__OP_0..{num_shards - 1}_CL_.tar"),
            "manifest_filepath": str(out_dir.resolve() / "tarred_audio_manifest.json"),
            "num_shards": num_shards, "utterances": len(rows), "seed": seed,
            "source_manifests": [str(m) for m in manifests]}
    fileio.write_json(out_dir / "shards.json", info)
    return out_dir / "shards.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, nargs="+", help="one or more manifests, sharded together")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--shards", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    print(Path(write_shards(args.manifest, args.out_dir, args.shards, args.seed, args.jobs)).read_text().strip())


if __name__ == "__main__":
    main()
