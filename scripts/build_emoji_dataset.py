#!/usr/bin/env python3
"""Build the embedded default image-caption dataset ``amd_nb/assets/emoji``.

The dataset pairs 64x64 Noto Emoji images with short English captions.  It is
built from two npm packages, read directly from their ``npm pack`` tarballs
(nothing is unpacked to disk):

* ``emoji-datasource-google@16.0.0`` -- ``emoji.json`` metadata (MIT) and the
  Noto Emoji PNGs in ``img/google/64/`` (Apache-2.0, Copyright Google).
* ``emojibase-data@17.0.0`` -- ``en/data.json`` CLDR labels and tags (MIT).

Usage::

    python scripts/build_emoji_dataset.py [--google TGZ] [--emojibase TGZ] \
        [--out amd_nb/assets/emoji] [--seed 0]

If a tarball is not given it is fetched with ``npm pack <name>@<version>``
into a temporary directory.

Outputs (in ``--out``):

* ``images_64.png`` -- RGB atlas, 64x64 tiles, 48 columns, row-major by item
  index; unused trailing tiles are white.
* ``emoji.json``   -- metadata, captions and split of every item (compact).
* ``NOTICE.md``    -- provenance, licences, caption rules and split sizes.

Construction rules (also written to NOTICE.md):

* Items: every base entry of emoji-datasource's ``emoji.json`` with
  ``has_img_google`` true and a PNG in ``img/google/64/``; skin-tone
  variations are skipped.  Items are ordered by ``sort_order``.
* Images: RGBA composited over white, converted to RGB, kept at 64x64.
* Captions: up to 5 per item, lowercase, whitespace-normalised, deduplicated
  case-insensitively with order kept, never empty (see ``build_captions``).
* Split by image (see ``split_by_pixels``): pixel-identical images are grouped
  and groups are dealt at random (seeded) to test (300), val (150), then train.

The build is deterministic: the same inputs and seed give byte-identical
outputs.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

GOOGLE_PKG = "emoji-datasource-google"
GOOGLE_VERSION = "16.0.0"
EMOJIBASE_PKG = "emojibase-data"
EMOJIBASE_VERSION = "17.0.0"

TILE = 64
COLS = 48
MAX_CAPTIONS = 5
TAG_CHUNK = 3
N_TEST = 300
N_VAL = 150
MAX_TOTAL_BYTES = 8 * 1024 * 1024
CANONICAL_COMMAND = "python scripts/build_emoji_dataset.py --out amd_nb/assets/emoji --seed 0"


# --------------------------------------------------------------------------
# Tarball access
# --------------------------------------------------------------------------
def npm_pack(spec: str, dest: Path) -> Path:
    """Fetch ``spec`` (``name@version``) with ``npm pack`` into ``dest``."""
    print(f"npm pack {spec} ...", file=sys.stderr)
    before = set(dest.glob("*.tgz"))
    subprocess.run(
        ["npm", "pack", spec, "--pack-destination", str(dest), "--silent"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    new = sorted(set(dest.glob("*.tgz")) - before)
    if len(new) != 1:
        raise RuntimeError(f"npm pack {spec}: expected one new tarball, found {new}")
    return new[0]


class Tarball:
    """Read-only access to the ``package/`` members of an npm tarball."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self._tar = tarfile.open(self.path, "r:gz")
        self._members = {m.name: m for m in self._tar.getmembers() if m.isfile()}

    def has(self, name: str) -> bool:
        return f"package/{name}" in self._members

    def read(self, name: str) -> bytes:
        member = self._members.get(f"package/{name}")
        if member is None:
            raise FileNotFoundError(f"{self.path.name}: package/{name} not found")
        return self._tar.extractfile(member).read()

    def json(self, name: str):
        return json.loads(self.read(name).decode("utf-8"))

    def check_version(self, pkg: str, version: str) -> None:
        meta = self.json("package.json")
        if meta.get("name") != pkg or meta.get("version") != version:
            raise SystemExit(
                f"{self.path}: expected {pkg}@{version}, "
                f"found {meta.get('name')}@{meta.get('version')}"
            )


# --------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------
def norm(text: str | None) -> str:
    """Lowercase and collapse whitespace."""
    return " ".join((text or "").split()).lower()


def strip_fe0f(hexcode: str) -> str:
    """Uppercase hexcode without variation-selector-16 (FE0F) parts."""
    return "-".join(p for p in hexcode.upper().split("-") if p != "FE0F")


def emojibase_index(data: list[dict]) -> tuple[dict, dict]:
    """Index emojibase base entries by uppercase hexcode and by FE0F-less hexcode."""
    exact, loose = {}, {}
    for entry in data:
        hexcode = entry["hexcode"].upper()
        exact.setdefault(hexcode, entry)
        loose.setdefault(strip_fe0f(hexcode), entry)
    return exact, loose


def lookup_emojibase(unified: str, exact: dict, loose: dict) -> dict | None:
    key = unified.upper()
    return exact.get(key) or loose.get(strip_fe0f(key))


def build_captions(item: dict, eb: dict | None) -> list[str]:
    """Captions for one emoji-datasource entry, in priority order.

    1. emoji-datasource ``name``;
    2. emojibase ``label``;
    3. the short names, ``_``/``-`` -> space, joined with ", ";
    4.-5. emojibase ``tags`` in chunks of 3, joined with ", " (as many chunks
       as fit; more than two only if earlier captions were duplicates);
    then, while fewer than 5: "<subcategory> emoji", "<category> emoji".
    All are lowercased and whitespace-normalised; empty and case-insensitive
    duplicate captions are dropped; at most 5 are kept.
    """
    candidates = [item.get("name"), eb.get("label") if eb else None]
    short_names = [
        norm(s.replace("_", " ").replace("-", " ")) for s in item.get("short_names") or []
    ]
    candidates.append(", ".join(s for s in short_names if s))
    tags = [norm(t) for t in (eb.get("tags") or [] if eb else [])]
    tags = [t for t in tags if t]
    candidates += [", ".join(tags[i : i + TAG_CHUNK]) for i in range(0, len(tags), TAG_CHUNK)]

    captions: list[str] = []
    seen: set[str] = set()

    def add(text: str | None) -> None:
        cap = norm(text)
        if cap and cap not in seen and len(captions) < MAX_CAPTIONS:
            seen.add(cap)
            captions.append(cap)

    # Name, label, short names, then tag chunks until 5 captions are reached.
    for cap in candidates:
        add(cap)
    # Fallbacks, used only while fewer than 5 captions.
    add(f"{(item.get('subcategory') or '').replace('-', ' ')} emoji")
    add(f"{(item.get('category') or '').lower()} emoji")
    if not captions:
        raise ValueError(f"no caption for {item.get('unified')}")
    return captions


# --------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------
def composite_white(png: bytes) -> Image.Image:
    """Decode a PNG, composite it over white and return a 64x64 RGB image."""
    img = Image.open(io.BytesIO(png))
    img.load()
    if img.size != (TILE, TILE):
        raise ValueError(f"unexpected image size {img.size}")
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def build_atlas(tiles: list[Image.Image]) -> Image.Image:
    rows = (len(tiles) + COLS - 1) // COLS
    atlas = Image.new("RGB", (COLS * TILE, rows * TILE), (255, 255, 255))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, COLS)
        atlas.paste(tile, (c * TILE, r * TILE))
    return atlas


# --------------------------------------------------------------------------
# NOTICE
# --------------------------------------------------------------------------
def split_licence(text: str) -> tuple[str, str]:
    """Return (copyright line, licence text) from an MIT LICENSE file."""
    lines = text.strip().splitlines()
    copyright_line = next((ln.strip() for ln in lines if ln.strip().lower().startswith("copyright")), "")
    return copyright_line, text.strip()


def split_by_pixels(tiles: list, seed: int) -> np.ndarray:
    """Split items by image: pixel-identical images form one group, groups are
    shuffled with ``default_rng(seed)`` and dealt to test until it holds
    ``N_TEST`` items, then to val until ``N_VAL``, the rest to train.  Identical
    images therefore never straddle two splits."""
    groups = collections.defaultdict(list)
    for i, t in enumerate(tiles):
        groups[hashlib.sha256(np.asarray(t).tobytes()).hexdigest()].append(i)
    order = list(groups.values())
    split_of = np.full(len(tiles), "train", dtype=object)
    counts = {"test": 0, "val": 0}
    for g in (order[k] for k in np.random.default_rng(seed).permutation(len(order))):
        s = "test" if counts["test"] < N_TEST else "val" if counts["val"] < N_VAL else "train"
        if s != "train":
            counts[s] += len(g)
        split_of[g] = s
    return split_of


def notice_text(google: Tarball, emojibase: Tarball, n: int, splits: dict, seed: int,
                hist: dict, dup_groups: list[list[str]]) -> str:
    g_copy, g_lic = split_licence(google.read("LICENSE").decode("utf-8"))
    e_copy, e_lic = split_licence(emojibase.read("LICENSE").decode("utf-8"))
    hist_lines = "\n".join(f"  | {k} | {v} |" for k, v in sorted(hist.items()))
    dup_note = (
        f"{sum(len(g) for g in dup_groups)} items in {len(dup_groups)} groups have "
        "pixel-identical images (e.g. flags sharing a design, some family variants); "
        "the split keeps each such group in one split (no image appears in two splits)."
        if dup_groups else "No two items have pixel-identical images."
    )
    return f"""# Emoji image-caption dataset

Default embedded dataset of `amd_nb`: {n} Noto Emoji images (64x64 RGB) with
{min(hist)}-{max(hist)} short English captions each.

## Provenance

| Package | Version | Used for | tarball sha256 |
|---|---|---|---|
| `{GOOGLE_PKG}` | {GOOGLE_VERSION} | `emoji.json` metadata, `img/google/64/*.png` images | `{google.sha256}` |
| `{EMOJIBASE_PKG}` | {EMOJIBASE_VERSION} | `en/data.json` labels and tags | `{emojibase.sha256}` |

Built with

    {CANONICAL_COMMAND}

which fetches both packages with `npm pack {GOOGLE_PKG}@{GOOGLE_VERSION}` and
`npm pack {EMOJIBASE_PKG}@{EMOJIBASE_VERSION}` (pass `--google TGZ` /
`--emojibase TGZ` to use already downloaded tarballs; the output is the same).
The build is deterministic: the same inputs and seed give byte-identical files.

## Files

* `images_64.png` -- RGB atlas of 64x64 tiles, {COLS} columns, row-major by item
  index (item `i` is at row `i // {COLS}`, column `i % {COLS}`); unused trailing
  tiles are white.
* `emoji.json` -- `{{name, version, tile, cols, n, seed, sources, splits, items}}`;
  each item has `id` (lowercase unified codepoints, e.g. `1f913`), `char`,
  `captions`, `category`, `subcategory` and `split`.

## Construction

* Items: every base entry of emoji-datasource `emoji.json` with
  `has_img_google` true and a PNG in `img/google/64/`; skin-tone variations are
  not included. Items are ordered by `sort_order`.
* Images: the RGBA PNG is alpha-composited over white and converted to RGB,
  size unchanged (64x64).
* Captions (at most {MAX_CAPTIONS}; lowercase; whitespace collapsed; empty
  captions and case-insensitive duplicates dropped, first occurrence kept):
  1. emoji-datasource `name`;
  2. emojibase `label`, matched by uppercase hexcode (falling back to the
     hexcode with `FE0F` parts removed);
  3. emoji-datasource `short_names` with `_`/`-` replaced by spaces, joined
     with `, ` (e.g. `flag eg`; `gb, uk, flag gb`);
  4. and 5. emojibase `tags` in chunks of {TAG_CHUNK}, joined with `, `
     (e.g. `brainy, clever, expert`), as many chunks as fit (a third chunk
     only when an earlier caption was a duplicate);
  then, while fewer than {MAX_CAPTIONS}: `<subcategory, '-' -> ' '> emoji` and
  `<category, lowercased> emoji`.

  Captions per image:

  | captions | images |
  |---|---|
{hist_lines}

* Splits (by image): groups of pixel-identical images are shuffled with
  `numpy.random.default_rng({seed})` and dealt to `test` until it holds {N_TEST}
  images, then to `val` until {N_VAL}, the rest to `train`:
  train {splits['train']}, val {splits['val']}, test {splits['test']}.
  {dup_note}

## Licences

### Images: Noto Emoji -- Apache License 2.0

The emoji images are from Noto Emoji, Copyright Google Inc. (Google LLC),
licensed under the Apache License, Version 2.0, as redistributed in
`{GOOGLE_PKG}`. They were modified here: composited over a white background
and converted to RGB, then tiled into one atlas. You may not use these files
except in compliance with the License. Unless required by applicable law or
agreed to in writing, software distributed under the License is distributed on
an "AS IS" BASIS, WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express
or implied. The full licence text is at
https://www.apache.org/licenses/LICENSE-2.0

### Metadata: `{GOOGLE_PKG}` -- MIT

{g_copy}

```
{g_lic}
```

### Labels and tags: `{EMOJIBASE_PKG}` -- MIT

{e_copy}

```
{e_lic}
```
"""


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------
def unified_to_char(unified: str) -> str:
    return "".join(chr(int(cp, 16)) for cp in unified.split("-"))


def build(google: Tarball, emojibase: Tarball, out: Path, seed: int) -> dict:
    google.check_version(GOOGLE_PKG, GOOGLE_VERSION)
    emojibase.check_version(EMOJIBASE_PKG, EMOJIBASE_VERSION)

    entries = google.json("emoji.json")
    exact, loose = emojibase_index(emojibase.json("en/data.json"))

    entries = [
        e for e in entries
        if e.get("has_img_google") and google.has(f"img/google/64/{e['image']}")
    ]
    entries.sort(key=lambda e: e["sort_order"])
    n = len(entries)
    if n < N_TEST + N_VAL + 1:
        raise SystemExit(f"only {n} items")

    tiles = [composite_white(google.read(f"img/google/64/{e['image']}")) for e in entries]
    split_of = split_by_pixels(tiles, seed)

    items, unmatched = [], []
    for i, e in enumerate(entries):
        eb = lookup_emojibase(e["unified"], exact, loose)
        if eb is None:
            unmatched.append(e["unified"])
        items.append({
            "id": e["unified"].lower(),
            "char": unified_to_char(e["unified"]),
            "captions": build_captions(e, eb),
            "category": e["category"],
            "subcategory": e["subcategory"],
            "split": str(split_of[i]),
        })

    splits = {s: int((split_of == s).sum()) for s in ("train", "val", "test")}
    hist = dict(sorted(collections.Counter(len(it["captions"]) for it in items).items()))
    by_pixels = collections.defaultdict(list)
    for it, tile in zip(items, tiles):
        by_pixels[tile.tobytes()].append(it["id"])
    dup_groups = [g for g in by_pixels.values() if len(g) > 1]

    out.mkdir(parents=True, exist_ok=True)
    build_atlas(tiles).save(out / "images_64.png", format="PNG", optimize=True)
    meta = {
        "name": "emoji",
        "version": 1,
        "tile": TILE,
        "cols": COLS,
        "n": n,
        "seed": seed,
        "sources": {GOOGLE_PKG: GOOGLE_VERSION, EMOJIBASE_PKG: EMOJIBASE_VERSION},
        "splits": splits,
        "items": items,
    }
    (out / "emoji.json").write_text(
        json.dumps(meta, separators=(",", ":"), ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "NOTICE.md").write_text(
        notice_text(google, emojibase, n, splits, seed, hist, dup_groups), encoding="utf-8")

    sizes = {f: (out / f).stat().st_size for f in ("images_64.png", "emoji.json", "NOTICE.md")}
    total = sum(sizes.values())
    print(f"N = {n}; splits: {splits}")
    print("captions per image: " + ", ".join(f"{k}: {v}" for k, v in hist.items()))
    print(f"pixel-identical images: {sum(map(len, dup_groups))} items in {len(dup_groups)} groups")
    if unmatched:
        print(f"no emojibase entry for {len(unmatched)} items: {unmatched[:10]}")
    for f, b in sizes.items():
        print(f"{f}: {b:,} bytes")
    print(f"total: {total:,} bytes (limit {MAX_TOTAL_BYTES:,})")
    if total > MAX_TOTAL_BYTES:
        raise SystemExit("asset size limit exceeded")
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--google", type=Path, help=f"{GOOGLE_PKG}-{GOOGLE_VERSION}.tgz (default: npm pack)")
    ap.add_argument("--emojibase", type=Path, help=f"{EMOJIBASE_PKG}-{EMOJIBASE_VERSION}.tgz (default: npm pack)")
    ap.add_argument("--out", type=Path, default=Path("amd_nb/assets/emoji"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        google = args.google or npm_pack(f"{GOOGLE_PKG}@{GOOGLE_VERSION}", Path(tmp))
        emojibase = args.emojibase or npm_pack(f"{EMOJIBASE_PKG}@{EMOJIBASE_VERSION}", Path(tmp))
        build(Tarball(google), Tarball(emojibase), args.out, args.seed)


if __name__ == "__main__":
    main()
