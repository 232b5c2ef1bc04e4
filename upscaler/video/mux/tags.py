"""What of a source's metadata goes to the output: stream tags without stale encoder fields, spelled as
the output container spells them.
"""

from __future__ import annotations

import av
import av.error

# Source metadata that describes the old file, not the new one (the muxer writes its own).
_STALE_KEYS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}
_STALE_PREFIXES = ("_statistics", "number_of_", "bps")


def fresh(metadata: dict[str, str]) -> dict[str, str]:
    return {
        key: value
        for key, value in metadata.items()
        if key.lower() not in _STALE_KEYS and not key.lower().startswith(_STALE_PREFIXES)
    }


# ISO 639-2 gives some languages two codes (/T 'deu', /B 'ger'). QuickTime stores Macintosh language
# codes, and FFmpeg's mov muxer finds each under one spelling only, mostly /B but 'fra', 'ces', 'ron' and
# 'slk' as /T (measured with PyAV 18); the other spelling is dropped as unknown unless respelled.
_QUICKTIME_SPELLING = {
    "sqi": "alb", "hye": "arm", "eus": "baq", "mya": "bur", "zho": "chi", "nld": "dut", "kat": "geo",
    "deu": "ger", "ell": "gre", "isl": "ice", "mkd": "mac", "msa": "may", "fas": "per", "bod": "tib",
    "cym": "wel", "cze": "ces", "fre": "fra", "rum": "ron", "slo": "slk",
}  # fmt: skip


def stream_tags(stream: av.stream.Stream, container: str = "") -> dict[str, str]:
    """A stream's metadata for the output. MP4/MOV keep a track's title in a 'name' box that the demuxer
    reads back as 'name' but the muxers write only from 'title': renamed, or every MP4 title is lost.
    For MOV a language code is respelled the way QuickTime's language table knows it."""
    tags = fresh(stream.metadata)
    if "name" in tags and not tags.get("title"):
        tags["title"] = tags.pop("name")
    if container == "mov" and tags.get("language") in _QUICKTIME_SPELLING:
        tags["language"] = _QUICKTIME_SPELLING[tags["language"]]
    return tags
