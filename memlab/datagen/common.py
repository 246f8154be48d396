"""Shared by the generators: seeded sub-streams, de-duplication, the manifest and the atomic writer."""
from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

from memlab.text import normalize_text
from memlab.io import DataError, atomic_output_dir, write_json_atomic, write_jsonl_atomic


def sub_rng(seed: int, purpose: str) -> random.Random:
    """An independent stream per purpose ("answers", "probes", ...), so adding probes does not change
    the training variants. Seeding with a str is deterministic across runs (hashed with sha512)."""
    return random.Random(f"memlab:{seed}:{purpose}")


def random_number(rng: random.Random, digits: int) -> str:
    """A `digits`-digit number as a string, first digit non-zero."""
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits))


def dedupe_by_normalized_text(rows: Sequence[dict]) -> tuple[list[dict], int]:
    """Keep the first row of each normalized text (so a member never equals a non-member after
    normalization); returns (kept rows, number dropped)."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        key = normalize_text(row["text"])
        if key and key not in seen:
            seen.add(key)
            kept.append(row)
    return kept, len(rows) - len(kept)


def recorded_arguments(args: Any) -> dict:
    """The arguments for the manifest, without `output_dir` (the manifest lives there), so two runs with
    the same arguments and seed write byte-identical manifests wherever they write."""
    values = dataclasses.asdict(args) if dataclasses.is_dataclass(args) else dict(args)
    return {k: v for k, v in values.items() if k != "output_dir"}


def build_manifest(generator: str, args: Any, seed: int | None, files: Mapping[str, Sequence[dict]],
                   leakage: dict | None, extra: Mapping[str, Any] | None = None) -> dict:
    from memlab import __version__

    manifest = {
        "generator": generator,
        "arguments": recorded_arguments(args),
        "seed": seed,
        "counts": {name: len(rows) for name, rows in files.items()},
        "package": {"name": "memlab", "version": __version__},
        "leakage_check": leakage,
    }
    manifest.update(extra or {})
    return manifest


def _share(directory: Path) -> None:
    """Temp dirs/files are created 0700/0600; datasets are meant to be shared, so apply the umask."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for f in directory.iterdir():
        os.chmod(f, 0o666 & ~umask)


def write_dataset(output_dir, files: Mapping[str, Sequence[dict]], manifest: dict) -> Path:
    """Write every `name -> rows` JSONL file plus manifest.json into `output_dir`, atomically: the
    directory appears complete or not at all. An existing one is replaced as a whole, but only if it
    is empty or was itself written by make_data.py (holds manifest.json): never wipe a user's folder."""
    out = Path(output_dir)
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise DataError(f"output dir {out}: exists, is not empty and holds no manifest.json (not written by "
                        "make_data.py); refusing to replace it, choose a new --output_dir")
    if out.is_dir() and (out / "manifest.json").exists():
        # replaced as a whole only when it holds nothing but what make_data.py wrote there (its manifest
        # lists the files): a user's notes or analysis added beside them are never deleted
        try:
            written = set(json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("counts", {}))
        except (OSError, ValueError, AttributeError):
            written = set()
        foreign = sorted(p.name for p in out.iterdir() if p.name not in written | {"manifest.json"})
        if foreign:
            raise DataError(f"output dir {out}: holds {', '.join(foreign[:5])}{', ...' if len(foreign) > 5 else ''}, "
                            "which make_data.py did not write there; refusing to replace it: move them away or "
                            "choose a new --output_dir")
    try:
        with atomic_output_dir(output_dir) as tmp:
            for name, rows in files.items():
                write_jsonl_atomic(tmp / name, rows)
            write_json_atomic(tmp / "manifest.json", manifest)
            _share(tmp)
    except OSError as e:
        raise DataError(f"output dir {output_dir}: cannot write ({e.strerror or e})") from None
    return Path(output_dir)
